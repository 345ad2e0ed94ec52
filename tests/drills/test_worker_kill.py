"""Worker `kill -9` in the middle of a long task: redelivered, succeeds exactly once."""

from __future__ import annotations

import pytest
from serviceprocs import Worker, wait_for

from .calls import create_task, expected_result, random_csv, upload_ok, wait_final

pytestmark = pytest.mark.timeout(300)

# FUN on 14 columns x 4000 rows of 0..3 (seed 11) runs ~12 s and finds 289 FDs.
LONG = {"columns": 14, "rows": 4000, "values": 3, "seed": 11}


def test_task_survives_worker_kill_9_and_succeeds_once(api, launch, db, tmp_path) -> None:
    content = random_csv(**LONG)
    dataset = upload_ok(api.client, "long.csv", content)
    first = launch(Worker)
    task_id = create_task(api.client, dataset["id"], "fd", algorithm="FUN")
    state = "SELECT status, attempts FROM profiling_tasks WHERE id = %s"
    wait_for(lambda: db.execute(state, (task_id,)).fetchone() == ("running", 1), 60, "start")
    wait_for(lambda: "attempt 1" in first.output(), 10, "the worker to log the attempt")

    first.kill_hard()
    assert db.execute(state, (task_id,)).fetchone() == ("running", 1)
    second = launch(Worker)
    task = wait_final(api.client, task_id, timeout=180)

    expected = expected_result(tmp_path, content)
    assert (task["status"], task["error"]) == ("succeeded", None)
    assert task["attempts"] == 2
    assert task["result"] == expected
    assert len(expected["fds"]) == 289
    # Exactly once: the new worker ran it once and nothing else recorded an outcome.
    assert second.output().count(f"task {task_id} attempt 2") == 1
    assert f"Task desbordante.profile[{task_id}] succeeded" in second.output()
    row = db.execute("SELECT attempts, status FROM profiling_tasks WHERE id = %s", (task_id,))
    assert row.fetchone() == (2, "succeeded")
