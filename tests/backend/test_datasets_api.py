"""POST/GET/DELETE /api/v1/datasets on the real database and upload directory."""

from __future__ import annotations

import hashlib
import uuid

import pytest

CITIES = b"id,city,zip,name\n1,A,10,x\n2,A,10,y\n3,B,20,x\n4,C,20,y\n"
LIMIT = 1024 * 1024  # MAX_UPLOAD_SIZE_BYTES in the test environment


def test_upload_stores_file_and_metadata(api, uploads) -> None:
    response = api.upload("cities.csv", CITIES)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "cities.csv"
    assert body["size"] == len(CITIES)
    assert body["sha256"] == hashlib.sha256(CITIES).hexdigest()
    assert body["separator"] == ","
    assert body["has_header"] is True
    assert body["columns"] == ["id", "city", "zip", "name"]
    assert body["row_count"] == 4
    assert (uploads / "datasets" / f"{body['id']}.csv").read_bytes() == CITIES
    assert list((uploads / "incoming").iterdir()) == []


def test_upload_without_header_and_other_separator(api) -> None:
    body = api.upload("nums.csv", b"1;2;3\n4;5;6\n", separator=";", has_header="false").json()

    assert body["columns"] == ["0", "1", "2"]
    assert body["row_count"] == 2
    assert body["separator"] == ";"


def test_quoted_fields_may_contain_the_separator(api) -> None:
    body = api.upload("q.csv", b'a,b\n1,"x,y"\n2,z\n').json()

    assert body["columns"] == ["a", "b"]
    assert body["row_count"] == 2


def test_has_header_reads_true_and_false_in_any_case(api) -> None:
    """What the document's boolean is sent as; `False` is what Python's `str` makes of it."""
    body = api.upload("nums.csv", b"1,2\n", has_header="False").json()

    assert body["has_header"] is False
    assert body["columns"] == ["0", "1"]


def test_control_characters_are_dropped_from_the_file_name(api) -> None:
    """PostgreSQL text cannot hold NUL; the name is for display only."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="ci\x00ties\x7f.csv"'
        b"\r\n\r\n" + CITIES + b"\r\n--b--\r\n"
    )

    response = api.client.post(
        "/api/v1/datasets",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "cities.csv"


def test_client_file_name_is_never_used_as_a_path(api, uploads) -> None:
    body = api.upload("../../../etc/evil.csv", CITIES).json()

    assert body["name"] == "evil.csv"
    assert (uploads / "datasets" / f"{body['id']}.csv").exists()
    assert not (uploads.parent / "etc").exists()


def test_list_get_and_delete(api, uploads) -> None:
    created = api.upload("cities.csv", CITIES).json()
    path = uploads / "datasets" / f"{created['id']}.csv"

    listed = api.client.get("/api/v1/datasets").json()
    assert created["id"] in [d["id"] for d in listed]
    assert api.client.get(f"/api/v1/datasets/{created['id']}").json() == created

    assert api.client.delete(f"/api/v1/datasets/{created['id']}").status_code == 204
    assert not path.exists()
    missing = api.client.get(f"/api/v1/datasets/{created['id']}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"dataset {created['id']} not found"}


def test_delete_is_refused_while_a_task_is_queued(api, uploads, db) -> None:
    created = api.upload("cities.csv", CITIES).json()
    task = api.create_task(created["id"], "fd").json()  # no worker runs in this test: stays queued

    response = api.client.delete(f"/api/v1/datasets/{created['id']}")

    assert response.status_code == 409
    assert "queued or running" in response.json()["detail"]
    assert (uploads / "datasets" / f"{created['id']}.csv").exists()
    db.execute("UPDATE profiling_tasks SET status = 'failed' WHERE id = %s", (task["id"],))
    assert api.client.delete(f"/api/v1/datasets/{created['id']}").status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("get", f"/api/v1/datasets/{uuid.UUID(int=1)}", 404, "not found"),
        ("delete", f"/api/v1/datasets/{uuid.UUID(int=1)}", 404, "not found"),
        ("get", "/api/v1/datasets/not-a-uuid", 422, "dataset_id: Input should be a valid UUID"),
        ("delete", "/api/v1/datasets/42", 422, "dataset_id: Input should be a valid UUID"),
    ],
)
def test_unknown_and_malformed_ids(api, method, path, status, detail) -> None:
    response = getattr(api.client, method)(path)

    assert response.status_code == status
    assert detail in response.json()["detail"]


REJECTED = [
    ("inconsistent columns", b"a,b\n1,2\n3,4,5\n", {}, 422, "line 3 has 3 columns, expected 2"),
    ("not utf-8", b"a,b\n1,\xff\xfe\n", {}, 422, "not UTF-8 text"),
    ("empty file", b"", {}, 422, "file: the uploaded file is empty"),
    ("empty first line", b"\n1,2\n", {}, 422, "no columns"),
    ("duplicate header", b"a,a\n1,2\n", {}, 422, "duplicate column name 'a'"),
    ("empty header name", b"a,\n1,2\n", {}, 422, "column 2 has an empty name"),
    ("two-char separator", CITIES, {"separator": ";;"}, 422, "separator: must be exactly one"),
    ("quote separator", CITIES, {"separator": '"'}, 422, "separator: must be exactly one"),
    ("NUL separator", CITIES, {"separator": "\x00"}, 422, "other than a quote, a newline or NUL"),
    ("NUL in a column name", b"a,b\x00\n1,2\n", {}, 422, "column 2 has a NUL character"),
    ("bad has_header", CITIES, {"has_header": "maybe"}, 422, "has_header: must be a boolean"),
    ("has_header as a number", CITIES, {"has_header": "1"}, 422, "has_header: must be a boolean"),
    ("unknown field", CITIES, {"colour": "red"}, 422, "colour: unknown form field"),
    ("repeated field", CITIES, {"separator": [",", ";"]}, 422, "separator: given more than once"),
]


@pytest.mark.parametrize(
    ("content", "form", "status", "detail"),
    [case[1:] for case in REJECTED],
    ids=[case[0] for case in REJECTED],
)
def test_rejected_uploads_leave_nothing(api, stored, content, form, status, detail) -> None:
    before = stored.snapshot()

    response = api.upload("x.csv", content, **form)

    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert stored.snapshot() == before


def test_missing_file_part(api, stored) -> None:
    before = stored.snapshot()

    response = api.client.post("/api/v1/datasets", data={"separator": ","}, files={"x": ("", b"")})

    assert response.status_code == 422
    assert response.json()["detail"] == "file: field required"
    assert stored.snapshot() == before


def test_a_part_without_a_name_is_rejected(api, stored) -> None:
    before = stored.snapshot()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        b"a,b\n1,2\n\r\n"
        b"--b\r\nContent-Disposition: form-data\r\n\r\nnull\r\n--b--\r\n"
    )

    response = api.client.post(
        "/api/v1/datasets",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    assert response.status_code == 422
    assert response.json() == {
        "detail": "a form part has no name; allowed: file, separator, has_header"
    }
    assert stored.snapshot() == before


def test_not_multipart(api, stored) -> None:
    before = stored.snapshot()

    response = api.client.post(
        "/api/v1/datasets", content=CITIES, headers={"content-type": "text/csv"}
    )

    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]
    assert stored.snapshot() == before


def test_oversize_upload_with_honest_content_length(api, stored) -> None:
    before = stored.snapshot()

    response = api.upload("big.csv", b"a\n" + b"1\n" * LIMIT)

    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["detail"]
    assert stored.snapshot() == before


def test_oversize_upload_without_content_length_is_cut_on_the_running_count(api, stored) -> None:
    """A chunked body declares no length: the cap must hold on the bytes actually received."""
    before = stored.snapshot()
    boundary = "testboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\na\n"
    ).encode()

    def body():
        yield head
        for _ in range(2 * LIMIT // 65536):
            yield b"1\n" * 32768
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.client.post(
        "/api/v1/datasets",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["detail"]
    assert stored.snapshot() == before


def test_truncated_multipart_body_is_rejected(api, stored) -> None:
    before = stored.snapshot()
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\na,b\n1,2\n'

    response = api.client.post(
        "/api/v1/datasets",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    assert response.status_code == 400
    assert response.json()["detail"] == "the multipart body is incomplete"
    assert stored.snapshot() == before


def _chunked(boundary: str, head_fields: dict[str, str], content: bytes, piece: int):
    """A multipart body as a generator of PIECE-byte chunks (no Content-Length: chunked)."""
    fields = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in head_fields.items()
    )
    body = (
        (
            f'{fields}--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"'
            "\r\nContent-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return (body[i : i + piece] for i in range(0, len(body), piece))


def _post_chunked(api, content: bytes, piece: int, **fields: str):
    return api.client.post(
        "/api/v1/datasets",
        content=_chunked("pieces", fields, content, piece),
        headers={"content-type": "multipart/form-data; boundary=pieces"},
    )


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_body_in_small_pieces_gives_the_same_dataset(api, piece) -> None:
    content = 'id;name\n1;"a;b"\n2;é\n'.encode()

    body = _post_chunked(api, content, piece, separator=";").json()

    assert (body["columns"], body["row_count"], body["size"]) == (["id", "name"], 2, len(content))
    assert body["sha256"] == hashlib.sha256(content).hexdigest()


def test_fields_after_the_file_part_are_honoured(api, stored) -> None:
    """The check ran with the default separator while receiving; the file is checked again."""
    before = stored.snapshot()
    files = {"file": ("n.csv", b"a;b\n1;2\n", "text/csv")}
    late = [("file", files["file"]), ("separator", (None, ";")), ("has_header", (None, "false"))]

    accepted = api.client.post("/api/v1/datasets", files=late).json()
    wrong = api.client.post(
        "/api/v1/datasets",
        files=[("file", ("w.csv", b"a;b\n1;2;3\n", "text/csv")), ("separator", (None, ";"))],
    )

    assert (accepted["columns"], accepted["row_count"]) == (["0", "1"], 2)
    assert wrong.status_code == 422
    assert wrong.json() == {"detail": "file: line 2 has 3 columns, expected 2"}
    api.client.delete(f"/api/v1/datasets/{accepted['id']}")
    assert stored.snapshot() == before


def test_files_over_several_blocks_are_checked_while_streaming(api, settings_with) -> None:
    settings_with(MAX_UPLOAD_SIZE_BYTES=8 * 1024 * 1024)
    rows = b"".join(b"%d,%d,%d\n" % (i, i * 7 % 1000, i % 13) for i in range(400_000))
    content = b"a,b,c\n" + rows  # about 5 MB: several 1 MiB blocks

    good = api.upload("big.csv", content)
    bad = api.upload("bad.csv", content + b"1,2\n")

    assert good.status_code == 201, good.text
    assert good.json()["row_count"] == 400_000
    assert bad.status_code == 422
    assert bad.json() == {"detail": "file: line 400002 has 2 columns, expected 3"}


def _stored_bytes(db) -> int:
    return db.execute("SELECT coalesce(sum(size), 0) FROM datasets").fetchone()[0]


def test_upload_over_the_quota_answers_507_and_leaves_nothing(api, stored, db, settings_with):
    quota = _stored_bytes(db) + 1000
    settings_with(UPLOAD_QUOTA_BYTES=quota)
    before = stored.snapshot()
    content = b"a,b\n" + b"1,2\n" * 500  # 2004 bytes

    honest = api.upload("q.csv", content)
    chunked = _post_chunked(api, content, 100)  # no Content-Length: cut on the running count

    for response in (honest, chunked):
        assert response.status_code == 507, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"file: the upload does not fit into the storage quota of {quota}")
        assert detail.endswith("delete datasets or raise UPLOAD_QUOTA_BYTES")
    assert stored.snapshot() == before


def test_uploads_within_the_quota_are_accepted_until_it_is_used_up(api, db, settings_with):
    quota = _stored_bytes(db) + 3 * len(CITIES)
    settings_with(UPLOAD_QUOTA_BYTES=quota)

    answers = [api.upload("cities.csv", CITIES).status_code for _ in range(4)]
    assert answers == [201, 201, 201, 507]
    assert _stored_bytes(db) == quota
    some = api.client.get("/api/v1/datasets", params={"limit": 1}).json()[0]
    api.client.delete(f"/api/v1/datasets/{some['id']}")  # deleting makes room again
    assert api.upload("cities.csv", CITIES).status_code == 201


def test_the_quota_is_checked_again_when_the_dataset_is_stored(service_env, db, uploads) -> None:
    """Two uploads that each fitted when they began cannot both be stored past the quota."""
    from desbordante_service.datasets import service
    from desbordante_service.datasets.upload import ReceivedUpload, UploadError
    from desbordante_service.db import session_scope
    from desbordante_service.storage import Storage

    storage = Storage(uploads)
    storage.ensure()
    dataset_id = uuid.uuid4()
    part = storage.part_path(dataset_id)
    part.write_bytes(CITIES)
    received = ReceivedUpload(path=part, filename="c.csv", size=len(CITIES), sha256="0" * 64)
    quota = _stored_bytes(db) + len(CITIES) - 1

    with session_scope() as session, pytest.raises(UploadError) as refused:
        service.accept(session, storage, dataset_id, received, quota)

    assert refused.value.status == 507
    assert not part.exists()
    assert not storage.dataset_path(dataset_id).exists()
    assert db.execute("SELECT count(*) FROM datasets WHERE id = %s", (dataset_id,)).fetchone() == (
        0,
    )
