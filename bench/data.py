"""Generated CSV datasets (reproducible from a seed), cached under .run/bench/data."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from desbordante_ops.core.settings import REPO_ROOT

DATA_DIR = REPO_ROOT / ".run" / "bench" / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: int
    rows: int
    values: int
    seed: int

    @property
    def path(self) -> Path:
        return DATA_DIR / f"{self.name}-{self.columns}x{self.rows}-v{self.values}-s{self.seed}.csv"

    def header(self) -> list[str]:
        return [f"c{i}" for i in range(self.columns)]

    def ensure(self) -> Path:
        """Write the file once; later runs reuse it."""
        path = self.path
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(self.seed)
        part = path.with_suffix(".part")
        with part.open("w", encoding="utf-8") as out:
            out.write(",".join(self.header()) + "\n")
            for _ in range(self.rows):
                out.write(",".join(str(rng.randint(0, self.values)) for _ in range(self.columns)))
                out.write("\n")
        part.replace(path)
        return path


def sized_file(name: str, size: int) -> Path:
    """A CSV of about SIZE bytes (3 integer columns), written in 1 MiB blocks."""
    path = DATA_DIR / f"{name}.csv"
    if path.exists() and path.stat().st_size >= size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    block = "".join(f"{i},{i * 7 % 1000},{i % 13}\n" for i in range(60_000)).encode()
    with path.open("wb") as out:
        out.write(b"a,b,c\n")
        written = 0
        while written < size:
            out.write(block)
            written += len(block)
    return path
