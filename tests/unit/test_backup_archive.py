"""The backup archive (manifest, checksums, damage) and the uploads tar (pack, unpack)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from invoke import Exit

from desbordante_ops.backup import archive, postgres, schema, uploads
from desbordante_ops.backup.archive import DATABASE, MANIFEST, UPLOADS, Manifest


def manifest(revision: str | None = "0001") -> Manifest:
    return Manifest(
        env="local",
        source="test",
        release="abc1234",
        schema_revision=revision,
        created_at="2026-11-26T12:00:00Z",
    )


@pytest.fixture
def staged(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "staged").mkdir()
    dump = tmp_path / "staged" / DATABASE
    dump.write_bytes(b"PGDMP" + bytes(range(256)) * 64)
    uploads = tmp_path / "staged" / UPLOADS
    with tarfile.open(uploads, "w") as tar:
        tar.add(__file__, arcname="datasets/x.csv")
    return {DATABASE: dump, UPLOADS: uploads}


def test_archive_round_trip_with_checksums(tmp_path: Path, staged: dict[str, Path]) -> None:
    path = tmp_path / "a.tar"
    written = archive.write_archive(path, manifest(), staged)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.part"))
    assert archive.read_manifest(path) == written
    assert written.members[DATABASE].size == staged[DATABASE].stat().st_size
    out = tmp_path / "out"
    out.mkdir()
    found = archive.extract_verified(path, written, out)
    for name in (DATABASE, UPLOADS):
        assert found[name].read_bytes() == staged[name].read_bytes()
    with tarfile.open(path) as tar:
        assert tar.getnames()[-1] == MANIFEST


def rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """Copy the archive with members replaced (bytes) or dropped (None)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    names = {m.name for m, _ in members}
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            new = change.get(member.name, data)
            if new is None:
                continue
            member.size = len(new)
            tar.addfile(member, io.BytesIO(new))
        for name, data in change.items():
            if name not in names and data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({DATABASE: b"PGDMP changed"}, "database.dump does not match its checksum"),
        ({"../../etc/passwd": b"x"}, "unexpected member '../../etc/passwd'"),
        ({UPLOADS: None}, "uploads.tar is missing"),
    ],
)
def test_a_damaged_archive_is_refused(
    tmp_path: Path, staged: dict[str, Path], change: dict[str, bytes | None], message: str
) -> None:
    path = tmp_path / "a.tar"
    written = archive.write_archive(path, manifest(), staged)
    rewrite(path, change)
    (tmp_path / "out").mkdir()
    with pytest.raises(Exit, match=message.replace("(", r"\(").replace(".", r"\.")):
        archive.extract_verified(path, written, tmp_path / "out")
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no manifest.json; it is not an archive of `invoke backup`"),
        (b"{not json", "manifest.json is not valid"),
        (b'{"format": 2, "env": "local"}', "manifest.json is not valid"),
    ],
)
def test_manifest_problems_are_one_line(
    tmp_path: Path, staged: dict[str, Path], content: bytes | None, message: str
) -> None:
    path = tmp_path / "a.tar"
    archive.write_archive(path, manifest(), staged)
    rewrite(path, {MANIFEST: content})
    with pytest.raises(Exit) as raised:
        archive.read_manifest(path)
    assert message in str(raised.value.message) and "\n" not in str(raised.value.message)


def test_other_format_and_non_archives_are_refused(tmp_path: Path, staged: dict[str, Path]) -> None:
    path = tmp_path / "a.tar"
    written = archive.write_archive(path, manifest(), staged)
    newer = written.model_copy(update={"format": 2}).model_dump_json().encode()
    rewrite(path, {MANIFEST: newer})
    with pytest.raises(Exit, match="archive format 2; this toolkit reads format 1"):
        archive.read_manifest(path)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(Exit, match="is not a backup archive"):
        archive.read_manifest(tmp_path / "junk.tar")
    with pytest.raises(Exit, match="not found; pass the archive"):
        archive.read_manifest(tmp_path / "missing.tar")


def test_schema_plan_same_older_and_newer() -> None:
    head = schema.plan("0001")
    assert head.head == "0001" and not head.migrate
    empty = schema.plan(None)
    assert empty.migrate and "older than the code's head 0001" in empty.summary
    with pytest.raises(Exit, match="ffff is newer than this code's head 0001: restore it with"):
        schema.plan("ffff")


# --- uploads tar -----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_pack_leaves_out_uploads_in_progress_and_unpack_replaces(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "datasets").mkdir(parents=True)
    (source / "datasets" / "a.csv").write_text("a\n1\n")
    (source / "datasets" / "b.csv").write_text("b\n2\n")
    (source / "incoming").mkdir()
    (source / "incoming" / "c.part").write_text("partial")
    packed = tmp_path / "uploads.tar"
    assert uploads.pack(source, packed) == (2, 8)
    with tarfile.open(packed) as tar:
        assert sorted(tar.getnames()) == ["datasets", "datasets/a.csv", "datasets/b.csv"]

    target = tmp_path / "target"
    (target / "datasets").mkdir(parents=True)
    (target / "datasets" / "new.csv").write_text("created after the backup")
    (target / "incoming").mkdir()
    (target / "incoming" / "d.lease").write_text("")
    (target / "stray").write_text("x")
    assert uploads.unpack(packed, target) == 2
    assert tree(target) == {
        "datasets/a.csv": b"a\n1\n",
        "datasets/b.csv": b"b\n2\n",
        "incoming/d.lease": b"",  # uploads in progress are left alone
    }


def test_unpack_reads_gnu_tar_of_a_pod_and_refuses_escapes(tmp_path: Path) -> None:
    source = tmp_path / "pod"
    (source / "datasets").mkdir(parents=True)
    (source / "datasets" / "a.csv").write_text("a\n")
    (source / "incoming").mkdir()
    tar_binary = shutil.which("tar")
    assert tar_binary
    packed = tmp_path / "gnu.tar"
    subprocess.run(
        [tar_binary, "-C", str(source), "--exclude=incoming", "-cf", str(packed), "."], check=True
    )
    target = tmp_path / "target"
    assert uploads.unpack(packed, target) == 1
    assert tree(target) == {"datasets/a.csv": b"a\n"}

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.csv")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        uploads.unpack(evil, target)
    assert not (tmp_path / "outside.csv").exists()
    assert tree(target) == {"datasets/a.csv": b"a\n"}  # nothing replaced


def test_pack_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert uploads.pack(tmp_path / "never-created", tmp_path / "u.tar") == (0, 0)
    with tarfile.open(tmp_path / "u.tar") as tar:
        assert tar.getnames() == []


# --- row counts and verification names ---------------------------------------------------------


def test_row_counts_are_kept_and_older_manifests_have_none(
    tmp_path: Path, staged: dict[str, Path]
) -> None:
    path = tmp_path / "a.tar"
    counted = manifest().model_copy(update={"row_counts": {"public.datasets": 3}})
    written = archive.write_archive(path, counted, staged)
    assert archive.read_manifest(path).row_counts == {"public.datasets": 3}
    older = written.model_dump_json(exclude={"row_counts"})  # what a toolkit before them wrote
    assert "row_counts" not in older
    rewrite(path, {MANIFEST: older.encode()})
    assert archive.read_manifest(path).row_counts is None


def test_unverified_names() -> None:
    path = Path("/b/desbordante-stage-20261126T120000Z.tar")
    unverified = archive.unverified_name(path)
    assert unverified == Path("/b/desbordante-stage-20261126T120000Z.unverified.tar")
    assert archive.unverified_name(unverified) == unverified
    assert archive.verified_name(unverified) == path and archive.verified_name(path) == path
    assert unverified.name.endswith(archive.SUFFIX)  # still found as an archive


def test_extracting_only_the_dump_still_checks_every_member(
    tmp_path: Path, staged: dict[str, Path]
) -> None:
    path = tmp_path / "a.tar"
    written = archive.write_archive(path, manifest(), staged)
    out = tmp_path / "out"
    out.mkdir()
    found = archive.extract_verified(path, written, out, only=[DATABASE])
    assert found[DATABASE].read_bytes() == staged[DATABASE].read_bytes()
    assert [entry.name for entry in out.iterdir()] == [DATABASE]
    rewrite(path, {UPLOADS: b"changed"})
    with pytest.raises(Exit, match=r"uploads\.tar does not match its checksum"):
        archive.extract_verified(path, written, out, only=[DATABASE])


DATA_ONLY = r"""--
-- PostgreSQL database dump
--
SET statement_timeout = 0;

--
-- Data for Name: datasets; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.datasets (id, name) FROM stdin;
1	COPY public.fake (x) FROM stdin;
2	a\nb
3	\\.
\.


--
-- Data for Name: Odd (Name); Type: TABLE DATA; Schema: public; Owner: -
--

COPY public."Odd (Name)" (id) FROM stdin;
\.


SELECT pg_catalog.setval('public.datasets_id_seq', 3, true);
"""


def test_the_awk_counts_the_lines_of_each_copy_block() -> None:
    """The awk of count_command on what `pg_restore --data-only -f -` writes: a row that
    looks like a COPY line, an escaped newline and an escaped backslash-dot are rows."""
    command = postgres.count_command().partition("| ")[2]  # the awk, reading standard input
    done = subprocess.run(["bash", "-c", command], input=DATA_ONLY, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert postgres.parse_counts(done.stdout) == {"public.datasets": 3, 'public."Odd (Name)"': 0}
    with pytest.raises(ValueError, match="unexpected line"):
        postgres.parse_counts("3\tSELECT 1;\n")


@pytest.mark.parametrize(
    "name",
    ["public.t; DROP DATABASE x", 'public."a"; DROP TABLE b; --"', "t) UNION SELECT 1", ""],
)
def test_count_queries_take_only_table_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a table name"):
        postgres.count_rows_query(["public.ok", name])


def test_count_query_and_differences() -> None:
    tables = ["public.datasets", 'public."Odd ""x"" (Name)"']
    assert postgres.count_rows_query(tables) == (
        'SELECT 0, count(*) FROM public.datasets UNION ALL SELECT 1, count(*) FROM public."Odd '
        '""x"" (Name)" ORDER BY 1'
    )
    assert postgres.parse_rows("0|4\n1|0\n", tables) == {tables[0]: 4, tables[1]: 0}
    assert postgres.differences({"a": 1, "b": 2, "c": 0}, {"a": 1, "b": 3, "d": 0}) == [
        "b has 3 rows instead of 2",
        "c is missing",
        "d is not in the manifest",
    ]
