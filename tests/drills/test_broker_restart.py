"""RabbitMQ restarted with tasks queued: every task completes afterwards, none is lost."""

from __future__ import annotations

import pytest
from serviceprocs import Worker

from .calls import create_task, expected_result, random_csv, upload_ok, wait_final
from .services import rabbitmq_stopped

pytestmark = pytest.mark.timeout(400)

QUEUED = 6


def test_tasks_queued_across_a_broker_restart_all_complete(api, launch, db, tmp_path) -> None:
    content = random_csv(columns=6, rows=200, values=4, seed=3)
    dataset = upload_ok(api.client, "small.csv", content)["id"]
    queued = [create_task(api.client, dataset) for _ in range(QUEUED)]
    statuses = db.execute(
        "SELECT status, count(*) FROM profiling_tasks WHERE id = ANY(%s) GROUP BY status",
        ([*queued],),
    ).fetchall()
    assert statuses == [("queued", QUEUED)]

    with rabbitmq_stopped():
        down = api.client.get("/health/ready")
        refused = api.client.post("/api/v1/tasks", json={"dataset_id": dataset, "primitive": "fd"})
    assert down.status_code == 503 and down.json()["broker"].startswith("error")
    assert refused.status_code == 503, refused.text

    # The same API process publishes again after the restart, then a new worker drains all.
    after = create_task(api.client, dataset)
    launch(Worker)
    tasks = [wait_final(api.client, task_id, timeout=120) for task_id in [*queued, after]]

    expected = expected_result(tmp_path, content)
    assert [t["status"] for t in tasks] == ["succeeded"] * (QUEUED + 1)
    assert all(t["result"] == expected for t in tasks)
    assert all(t["attempts"] == 1 for t in tasks)
    orphans = db.execute(
        "SELECT count(*) FROM profiling_tasks WHERE dataset_id = %s AND status <> 'succeeded'",
        (dataset,),
    )
    assert orphans.fetchone() == (0,)
