"""The CSV check: the fast path (no quotes) and the csv-module path give the same answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from desbordante_service.datasets import csvcheck
from desbordante_service.datasets.csvcheck import CsvError, inspect_csv

CASES = [
    b"a,b\n1,2\n3,4\n",
    b"a,b\r\n1,2\r\n3,4\r\n",
    b"a,b\n1,2\n3,4",
    b"a,b\n1,2\n\n3,4\n",
    b"a,b\n1,2,3\n",
    b"a,b\n1\n",
    b"a,b\n1,2\n\xff\xfe,3\n",
    b"a,b\n1,\xc3\n",
    b"a,b\n1,2\n\n",
    b"x\n1\n\n2\n",
]


def _outcome(path: Path, has_header: bool = True) -> object:
    try:
        return inspect_csv(path, ",", has_header)
    except CsvError as exc:
        return str(exc)


@pytest.mark.parametrize("content", CASES)
def test_fast_path_agrees_with_the_csv_module(tmp_path: Path, monkeypatch, content: bytes) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)

    fast = _outcome(path)
    monkeypatch.setattr(csvcheck, "_plain", lambda _: False)
    slow = _outcome(path)

    assert fast == slow


def test_fast_path_agrees_on_random_files_across_block_boundaries(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(csvcheck, "BLOCK", 7)  # many block boundaries, inside lines and CRLFs
    rng = random.Random(5)
    path = tmp_path / "x.csv"
    for _ in range(200):
        lines = [",".join(str(rng.randint(0, 9)) for _ in range(3)) for _ in range(6)]
        if rng.random() < 0.5:
            lines[rng.randrange(1, 6)] += ",9"
        ending = rng.choice(["\n", "\r\n"])
        path.write_bytes((ending.join(lines) + rng.choice(["", ending])).encode())
        fast = _outcome(path)
        with monkeypatch.context() as patched:
            patched.setattr(csvcheck, "_plain", lambda _: False)
            slow = _outcome(path)
        assert fast == slow, path.read_bytes()


def test_quotes_and_bare_carriage_returns_use_the_csv_module(tmp_path: Path) -> None:
    quoted = tmp_path / "q.csv"
    quoted.write_bytes(b'a,b\n1,"x,y"\n')
    bare_cr = tmp_path / "cr.csv"
    bare_cr.write_bytes(b"a,b\r1,2\r")

    assert not csvcheck._plain(quoted)
    assert not csvcheck._plain(bare_cr)
    assert inspect_csv(quoted, ",", True).row_count == 1
    assert inspect_csv(bare_cr, ",", True).row_count == 1
