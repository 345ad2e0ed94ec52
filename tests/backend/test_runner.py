"""The Desbordante runner in this process: scratch files stay out of the working directory."""

from __future__ import annotations

from pathlib import Path

from desbordante_service.profiling import runner

DATA = Path(__file__).parent / "data"


def test_faida_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch) -> None:
    """Faida writes ./temp/Faida/...; the runner keeps that in a removed scratch directory."""
    monkeypatch.chdir(tmp_path)

    result = runner.run("ind", "Faida", {}, DATA / "ind.csv", ",", True, ["a", "b"])

    assert result == {"inds": [{"lhs": ["b"], "rhs": ["a"]}]}
    assert list(tmp_path.iterdir()) == []


def test_a_relative_dataset_path_still_resolves(tmp_path, monkeypatch) -> None:
    (tmp_path / "d.csv").write_bytes((DATA / "ind.csv").read_bytes())
    monkeypatch.chdir(tmp_path)

    result = runner.run("ind", "Spider", {}, Path("d.csv"), ",", True, ["a", "b"])

    assert result == {"inds": [{"lhs": ["b"], "rhs": ["a"]}]}
