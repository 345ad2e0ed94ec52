"""Real worker processes: exact results, failures, redelivery, kill -9 mid-task."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest

from desbordante_service.profiling import runner

pytestmark = pytest.mark.timeout(300)

# Worked out by hand (see the CSV files in data/):
# cities.csv: id is a key; city -> zip; {city,name} and {zip,name} are keys.
CITIES_FDS = [
    {"lhs": ["city"], "rhs": "zip"},
    {"lhs": ["id"], "rhs": "city"},
    {"lhs": ["id"], "rhs": "name"},
    {"lhs": ["id"], "rhs": "zip"},
    {"lhs": ["city", "name"], "rhs": "id"},
    {"lhs": ["zip", "name"], "rhs": "city"},
    {"lhs": ["zip", "name"], "rhs": "id"},
]
CITIES_UCCS = [["city", "name"], ["id"], ["zip", "name"]]
# afd.csv: a=1 on 9 rows (8 x, 1 y), a=2 on one row (z). b -> a holds exactly. a -> b is violated
# by 2*8*1 = 16 of the 90 ordered row pairs (g1 = 0.178); {} -> a by 2*9*1 = 18 (g1 = 0.2).
AFD_AT_0_1 = [{"lhs": ["b"], "rhs": "a"}]
AFD_AT_0_19 = [{"lhs": ["a"], "rhs": "b"}, {"lhs": ["b"], "rhs": "a"}]
AFD_AT_0_21 = [{"lhs": [], "rhs": "a"}, {"lhs": ["a"], "rhs": "b"}]  # b -> a is no longer minimal
# ind.csv: a = {1,2,3}, b = {1,2}: b is included in a, not the reverse.
IND = [{"lhs": ["b"], "rhs": ["a"]}]


def _random_csv(path: Path, columns: int, rows: int, values: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = [",".join(f"c{i}" for i in range(columns))]
    lines += [",".join(str(rng.randint(0, values)) for _ in range(columns)) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fd_ucc_ind_results_are_exact(api, worker) -> None:
    cities = api.upload_file("cities.csv")["id"]
    ind = api.upload_file("ind.csv")["id"]

    fd = api.run_task(cities, "fd")
    ucc = api.run_task(cities, "ucc")
    inds = api.run_task(ind, "ind")

    assert (fd["status"], fd["result"], fd["error"]) == ("succeeded", {"fds": CITIES_FDS}, None)
    assert ucc["result"] == {"uccs": CITIES_UCCS}
    assert inds["result"] == {"inds": IND}
    assert fd["attempts"] == 1
    assert fd["started_at"] and fd["finished_at"]


@pytest.mark.parametrize(
    ("error", "expected"), [(0.1, AFD_AT_0_1), (0.19, AFD_AT_0_19), (0.21, AFD_AT_0_21)]
)
def test_afd_respects_the_error_threshold(api, worker, error, expected) -> None:
    dataset = api.upload_file("afd.csv")["id"]

    task = api.run_task(dataset, "afd", config={"error": error})

    assert task["result"] == {"fds": expected}


def test_other_fd_algorithms_agree_with_hyfd(api, worker) -> None:
    dataset = api.upload_file("cities.csv")["id"]

    for algorithm in ("DFD", "FDep", "FUN", "Pyro"):
        assert api.run_task(dataset, "fd", algorithm=algorithm)["result"] == {"fds": CITIES_FDS}


def test_task_over_its_time_limit_fails_with_a_clear_message(api, worker, tmp_path) -> None:
    path = _random_csv(tmp_path / "slow.csv", columns=25, rows=2000, values=3, seed=7)
    dataset = api.upload("slow.csv", path.read_bytes()).json()["id"]

    task = api.run_task(dataset, "fd", algorithm="FdMine", time_limit=1)

    assert task["status"] == "failed"
    assert task["error"] == "time limit exceeded (1 s)"
    assert task["result"] is None


def test_redelivered_finished_task_is_not_recomputed(api, worker, db) -> None:
    from desbordante_service.worker.app import publish

    dataset = api.upload_file("cities.csv")["id"]
    task = api.run_task(dataset, "fd")
    row = "SELECT status, attempts, finished_at, result FROM profiling_tasks WHERE id = %s"
    before = db.execute(row, (task["id"],)).fetchone()

    publish(uuid.UUID(task["id"]), 60)  # the same message again, as after a redelivery
    deadline = time.monotonic() + 30
    while "not running it again" not in worker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)

    assert "not running it again" in worker.log.read_text()
    assert db.execute(row, (task["id"],)).fetchone() == before


def test_worker_killed_mid_task_is_redelivered_and_succeeds_once(
    api, start_worker, db, tmp_path
) -> None:
    path = _random_csv(tmp_path / "long.csv", columns=14, rows=4000, values=3, seed=11)
    dataset = api.upload("long.csv", path.read_bytes()).json()
    columns = dataset["columns"]
    first = start_worker()
    task_id = api.create_task(dataset["id"], "fd", algorithm="FUN").json()["id"]
    status = "SELECT status, attempts FROM profiling_tasks WHERE id = %s"
    deadline = time.monotonic() + 60
    while db.execute(status, (task_id,)).fetchone() != ("running", 1):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)

    first.kill_hard()
    assert db.execute(status, (task_id,)).fetchone() == ("running", 1)
    start_worker()
    task = api.wait_final(task_id, timeout=180)

    expected = runner.run("fd", "HyFD", {}, path, ",", True, columns)
    assert task["status"] == "succeeded"
    assert task["attempts"] == 2
    assert task["result"] == expected
    assert len(expected["fds"]) > 100


def test_running_task_whose_worker_vanished_is_failed_not_left_running(api, db) -> None:
    dataset = api.upload_file("cities.csv")["id"]
    task = api.create_task(dataset, "fd", time_limit=5).json()
    db.execute(
        "UPDATE profiling_tasks SET status = 'running', attempts = 1,"
        " started_at = now() - interval '10 minutes' WHERE id = %s",
        (task["id"],),
    )

    polled = api.client.get(f"/api/v1/tasks/{task['id']}").json()

    assert polled["status"] == "failed"
    assert polled["error"] == "worker lost: no result within the time limit"


def test_algorithm_error_fails_the_task_with_the_reason(api, worker, uploads) -> None:
    dataset = api.upload_file("cities.csv")["id"]
    (uploads / "datasets" / f"{dataset}.csv").unlink()  # storage lost the file

    task = api.run_task(dataset, "fd")

    assert task["status"] == "failed"
    assert task["error"].startswith("HyFD failed: ")
    assert task["result"] is None
