"""The one-pass CSV check: the same answers as the whole-file check it replaced
(tests/csv_oracle.py) for any split of the file into blocks, on the fast path and on the
csv-module path."""

from __future__ import annotations

import random
import tempfile
from itertools import pairwise
from pathlib import Path

import csv_oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desbordante_service.datasets.csvcheck import CsvError, inspect_csv, scan

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
    b'a,b\n1,"x\ny"\n2,3\n',
    b'a,b\n1,"x"y\n',
    b"a,b\r1,2\r3,4\r",
    b"a,b\n1,2\r",
    b'"a",b\n1,2\n',
    b"\n1,2\n",
    b"a,a\n1,2\n",
    b"a,\n1,2\n",
    b"a,b\n1,2\n3,4,5\n\xff\n",
    b"a,b\n1,2,3\n4,\xe2\x82",
    b"a,b\r1,2,3\r\xc3\xa9\xe2",  # a CR line ends once the next character is whole
    b"a,b\n1,2,3\r\xc3\xa9\xe2",
    b"a,b\n1,2\r\xc3",
    b"",
]
TOKENS = [b"a", b"1", b",", b";", b"\n", b"\r", b"\r\n", b'"', b" ", b"\xc3\xa9", b"\xe2\x82\xac"]
BAD_BYTES = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]


def oracle(content: bytes, separator: str = ",", has_header: bool = True) -> object:
    """The answer of the whole-file check that the one-pass check replaced."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.csv"
        path.write_bytes(content)
        try:
            summary = csv_oracle.inspect_csv(path, separator, has_header)
        except csv_oracle.CsvError as exc:
            return str(exc)
    return summary.columns, summary.row_count


def streamed(
    blocks: list[bytes], separator: str = ",", has_header: bool = True, fast: bool = True
) -> object:
    try:
        summary = scan(blocks, separator, fast=fast).summary(has_header)
    except CsvError as exc:
        return str(exc)
    return summary.columns, summary.row_count


def split(content: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(content)]
    return [content[start:end] for start, end in pairwise(points)]


@pytest.mark.parametrize("content", CASES)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "csv"])
def test_known_cases_agree_with_the_whole_file_check(content: bytes, fast: bool) -> None:
    expected = oracle(content)

    assert streamed([content], fast=fast) == expected
    assert streamed([content[i : i + 1] for i in range(len(content))], fast=fast) == expected


@st.composite
def csv_like(draw: st.DrawFn) -> bytes:
    """Mostly well-formed CSV, with the defects the check looks for mixed in now and then."""
    width = draw(st.integers(1, 4))
    field = st.lists(st.sampled_from([b"a", b"1", b" ", b"\xc3\xa9", b"\xf0\x9f\x98\x80"]))
    quoted = st.builds(lambda f: b'"' + f.replace(b'"', b'""') + b'"', st.binary(max_size=6))
    end = st.sampled_from([b"\n", b"\r\n", b"\r"]) if draw(st.booleans()) else st.just(b"\n")
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        count = width if draw(st.integers(0, 9)) else draw(st.integers(0, width + 1))
        values = [
            draw(quoted) if draw(st.integers(0, 7)) == 0 else b"".join(draw(field))
            for _ in range(count)
        ]
        lines.append(b",".join(values) + draw(end))
    content = b"".join(lines)
    if draw(st.integers(0, 4)) == 0:
        content = content.rstrip(b"\r\n")
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.sampled_from(BAD_BYTES)) + content[at:]
    return content


@settings(max_examples=600, deadline=None)
@given(
    content=st.one_of(csv_like(), st.lists(st.sampled_from(TOKENS + BAD_BYTES)).map(b"".join)),
    has_header=st.booleans(),
    fast=st.booleans(),
    data=st.data(),
)
def test_any_split_agrees_with_the_whole_file_check(
    content: bytes, has_header: bool, fast: bool, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(content)), max_size=8))

    got = streamed(split(content, cuts), has_header=has_header, fast=fast)

    assert got == oracle(content, has_header=has_header)


@settings(max_examples=150, deadline=None)
@given(
    separator=st.sampled_from([";", "\t", "a", "é", "|"]),
    rows=st.lists(st.lists(st.sampled_from(["x", "", "é", '"q"', "a"]), min_size=1, max_size=4)),
    data=st.data(),
)
def test_other_separators_agree(separator: str, rows: list[list[str]], data) -> None:
    content = "".join(separator.join(row) + "\n" for row in [["h1", "h2"], *rows]).encode()
    cuts = data.draw(st.lists(st.integers(0, len(content)), max_size=6))

    assert streamed(split(content, cuts), separator) == oracle(content, separator)


def _big(lines: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [f"{rng.randint(0, 999)},{rng.randint(0, 99)},x{i}\n".encode() for i in range(lines)]


BIG_DEFECTS = {
    "valid": lambda lines: None,
    "extra column late": lambda lines: lines.__setitem__(150_000, b"1,2,3,4\n"),
    "missing column late": lambda lines: lines.__setitem__(200_001, b"1,2\n"),
    "empty line late": lambda lines: lines.__setitem__(99_999, b"\n"),
    "invalid byte late": lambda lines: lines.__setitem__(180_000, b"1,\xff,3\n"),
    "quote late, then a bad line": lambda lines: (
        lines.__setitem__(120_000, b'1,"a\nb",3\n'),
        lines.__setitem__(190_000, b"1,2\n"),
    ),
    "quote late, then valid": lambda lines: lines.__setitem__(120_000, b'1,"a,b",3\n'),
    "bare CR late": lambda lines: lines.__setitem__(170_000, b"1,2,3\r"),
    "CRLF from the middle": lambda lines: lines.__setitem__(
        slice(100_000, None), [line[:-1] + b"\r\n" for line in lines[100_000:]]
    ),
    "malformed quote late": lambda lines: lines.__setitem__(210_000, b'1,"a"b,3\n'),
}


@pytest.mark.parametrize("defect", BIG_DEFECTS)
def test_files_over_several_blocks_agree(defect: str, tmp_path: Path) -> None:
    lines = [b"a,b,c\n", *_big(230_000, seed=7)]  # about 3.5 MB: several 1 MiB blocks
    BIG_DEFECTS[defect](lines)
    content = b"".join(lines)
    rng = random.Random(defect)
    uneven = split(content, [rng.randrange(len(content)) for _ in range(40)])

    expected = oracle(content)
    assert streamed(uneven) == expected
    assert streamed(uneven, fast=False) == expected
    path = tmp_path / "big.csv"
    path.write_bytes(content)
    assert streamed(list(_blocks_of(path))) == expected


def _blocks_of(path: Path):
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            yield block


def test_inspect_csv_reads_a_stored_file(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,b\n1,"x,y"\n2,z\n')

    summary = inspect_csv(path, ",", True)

    assert (summary.columns, summary.row_count) == (["a", "b"], 2)


def test_quotes_and_bare_carriage_returns_are_read_by_the_csv_module() -> None:
    assert streamed([b'a,b\n1,"x\ny"\n']) == (["a", "b"], 1)
    assert streamed([b"a,b\r1,2\r"]) == (["a", "b"], 1)
    assert streamed([b"a,b\n1,2\n3,4\r5,6\n"]) == (["a", "b"], 3)
