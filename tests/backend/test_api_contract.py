"""The published contract: one error shape for every status, bounds, methods, the document."""

from __future__ import annotations

import uuid

import httpx
import pytest

from desbordante_service.profiling.primitives import PRIMITIVES

CITIES = b"id,city,zip,name\n1,A,10,x\n2,A,10,y\n3,B,20,x\n4,C,20,y\n"
LIMIT = 1024 * 1024  # MAX_UPLOAD_SIZE_BYTES in the test environment
BIGINT_MAX = 2**63 - 1
UNKNOWN = uuid.UUID(int=5)


@pytest.fixture(scope="module")
def document(app) -> dict:
    return app.openapi()


def _error_requests(api) -> dict[int, httpx.Response]:
    """One real request per error status the API answers with, on the real services."""
    dataset = api.upload("cities.csv", CITIES).json()
    api.create_task(dataset["id"], "fd")  # no worker here: stays queued, so DELETE is refused
    client = api.client
    json_header = {"content-type": "application/json"}
    return {
        400: client.post("/api/v1/tasks", content=b"\xff", headers=json_header),
        404: client.get(f"/api/v1/datasets/{UNKNOWN}"),
        405: client.put("/api/v1/tasks"),
        409: client.delete(f"/api/v1/datasets/{dataset['id']}"),
        413: api.upload("big.csv", b"a\n" + b"1\n" * LIMIT),
        415: client.post("/api/v1/datasets", content=CITIES, headers={"content-type": "text/csv"}),
        422: client.get("/api/v1/datasets", params={"offset": -1}),
    }


def test_every_error_status_answers_the_same_shape(api) -> None:
    for status, response in _error_requests(api).items():
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert list(body) == ["detail"], (status, body)
        assert isinstance(body["detail"], str) and "\n" not in body["detail"]


def test_an_unexpected_failure_is_500_in_the_same_shape(app) -> None:
    from fastapi.testclient import TestClient

    from desbordante_service.api.deps import _session

    def broken():
        raise RuntimeError("boom")

    app.dependency_overrides[_session] = broken
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/api/v1/datasets")
    finally:
        app.dependency_overrides.clear()

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the API log has the details"}


@pytest.mark.parametrize(
    "query",
    [
        {"offset": "171081790822749705338880"},
        {"offset": BIGINT_MAX + 1},
        {"limit": 0},
        {"limit": 501},
        {"limit": "1e3"},
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/datasets", "/api/v1/tasks"])
def test_out_of_range_paging_is_422_not_a_database_error(api, path, query) -> None:
    response = api.client.get(path, params=query)

    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{next(iter(query))}: ")


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/api/v1/tasks"])
def test_the_largest_offset_postgresql_holds_is_answered(api, path) -> None:
    response = api.client.get(path, params={"offset": BIGINT_MAX, "limit": 500})

    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("wait", ["601", "nan", "inf", "-1"])
def test_wait_is_bounded(api, wait) -> None:
    response = api.client.get(f"/api/v1/tasks/{UNKNOWN}", params={"wait": wait})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("wait: ")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("put", f"/api/v1/datasets/{UNKNOWN}", "GET, DELETE, OPTIONS"),
        ("patch", "/api/v1/datasets", "GET, POST, OPTIONS"),
        ("delete", "/api/v1/tasks", "GET, POST, OPTIONS"),
        ("post", f"/api/v1/tasks/{UNKNOWN}", "GET, OPTIONS"),
        ("post", "/health/ready", "GET, OPTIONS"),
    ],
)
def test_unsupported_method_is_405_naming_every_method_of_the_path(api, method, path, allow):
    response = api.client.request(method.upper(), path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {
        "detail": f"method {method.upper()} is not allowed on {path}; allowed: {allow}"
    }


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        (f"/api/v1/datasets/{UNKNOWN}", "GET, DELETE, OPTIONS"),
        ("/api/v1/tasks", "GET, POST, OPTIONS"),
        ("/api/v1/tasks/primitives", "GET, OPTIONS"),
    ],
)
def test_options_answers_the_allowed_methods(api, path, allow) -> None:
    response = api.client.options(path)

    assert response.status_code == 204
    assert response.headers["allow"] == allow
    assert response.content == b""


def test_unknown_path_is_404_in_the_error_shape(api) -> None:
    response = api.client.get("/api/v1/nothing")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_unknown_primitive_is_422_in_the_error_shape(api) -> None:
    dataset = api.upload("cities.csv", CITIES).json()

    response = api.create_task(dataset["id"], "")

    assert response.status_code == 422
    assert response.json() == {
        "detail": "primitive: unknown primitive ''; allowed: afd, fd, ind, ucc"
    }


def test_integral_float_options_count_as_integers(api) -> None:
    """JSON Schema's `integer` includes 2.0; 2.5 is still rejected."""
    dataset = api.upload("cities.csv", CITIES).json()

    accepted = api.create_task(dataset["id"], "fd", config={"max_lhs": 2.0}, time_limit=30.0)
    rejected = api.create_task(dataset["id"], "fd", config={"max_lhs": 2.5})

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["config"]["max_lhs"] == 2
    assert accepted.json()["time_limit"] == 30
    assert rejected.status_code == 422
    assert rejected.json()["detail"].startswith("config.max_lhs: Input should be a valid integer")


# --- the document --------------------------------------------------------------------------


def _operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_response_is_documented_with_the_error_model(document) -> None:
    for name, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]["$ref"]
            assert schema.rsplit("/", 1)[1] in ("ErrorOut", "NotReadyOut"), (name, status)
            if status == "503" and name != "GET /health/ready":
                assert response["headers"]["Retry-After"]["required"] is True, name
    not_ready = document["components"]["schemas"]["NotReadyOut"]
    assert (
        not_ready["properties"]["detail"]
        == document["components"]["schemas"]["ErrorOut"]["properties"]["detail"]
    )
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("POST /api/v1/datasets", {"201", "400", "413", "415", "422", "429", "503", "507"}),
        ("GET /api/v1/datasets", {"200", "422", "503"}),
        ("GET /api/v1/datasets/{dataset_id}", {"200", "404", "422", "503"}),
        ("DELETE /api/v1/datasets/{dataset_id}", {"204", "404", "409", "422", "503"}),
        ("POST /api/v1/tasks", {"202", "400", "404", "422", "429", "503"}),
        ("GET /api/v1/tasks", {"200", "422", "503"}),
        ("GET /api/v1/tasks/{task_id}", {"200", "404", "422", "503"}),
        ("GET /health/ready", {"200", "503"}),
    ],
)
def test_each_operation_documents_the_statuses_it_answers(document, operation, statuses):
    assert set(dict(_operations(document))[operation]["responses"]) == statuses


def test_paging_and_wait_are_bounded_in_the_document(document) -> None:
    for path in ("/api/v1/datasets", "/api/v1/tasks"):
        params = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
        assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 500)
        assert (params["offset"]["minimum"], params["offset"]["maximum"]) == (0, BIGINT_MAX)
    get_task = document["paths"]["/api/v1/tasks/{task_id}"]["get"]
    wait = next(p["schema"] for p in get_task["parameters"] if p["name"] == "wait")
    assert (wait["minimum"], wait["maximum"]) == (0, 600)


def test_task_body_lists_exactly_the_registry(document, service_env) -> None:
    """One variant per primitive and algorithm, from the registry, with this server's limit."""
    schemas = document["components"]["schemas"]
    variants = [schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in schemas["TaskCreate"]["oneOf"]]
    documented: dict[str, set[str]] = {}
    for variant in variants:
        properties = variant["properties"]
        algorithm = properties["algorithm"]
        name = algorithm["const"] if "const" in algorithm else algorithm["anyOf"][0]["const"]
        documented.setdefault(properties["primitive"]["const"], set()).add(name)
        assert variant["additionalProperties"] is False
        limit = properties["time_limit"]["anyOf"][0]
        assert limit["maximum"] == int(service_env["TASK_TIME_LIMIT_SECONDS"])
    assert documented == {name: set(spec.algorithms) for name, spec in PRIMITIVES.items()}


def test_upload_form_is_documented_as_the_server_reads_it(document) -> None:
    body = document["paths"]["/api/v1/datasets"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["file"]
    assert "UTF-8" in schema["properties"]["file"]["description"]
    assert schema["properties"]["separator"]["pattern"] == "^[^\\u000d\\u000a\\u0022\\u0000]$"
    assert f"{LIMIT} bytes" in document["info"]["description"]


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c636000000002000148afa47100000000"
    "49454e44ae426082"
)


def test_upload_file_is_published_as_utf8_csv_text_not_any_bytes(document) -> None:
    """What the schema admits for `file` is what the server takes: CSV text sent as UTF-8.

    Not `format: binary` (any bytes): the server refuses bytes that are not UTF-8 (422).
    """
    assert document["openapi"].startswith("3.1.")
    media = document["paths"]["/api/v1/datasets"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    field = media["schema"]["properties"]["file"]
    assert field["type"] == "string"
    assert field["contentMediaType"] == "text/csv"
    assert field["minLength"] == 1
    assert "format" not in field and "contentEncoding" not in field
    assert media["encoding"] == {"file": {"contentType": "text/csv; charset=utf-8"}}


def test_upload_as_the_schema_describes_it_is_accepted(api) -> None:
    """A plain form part (no file name) of UTF-8 text, as a generated client sends the string."""
    text = "naïve,größe\nœuvre,東京\n"
    files = {"file": (None, text.encode("utf-8"), "text/csv; charset=utf-8")}

    response = api.client.post("/api/v1/datasets", files=files)

    assert response.status_code == 201, response.text
    assert response.json()["columns"] == ["naïve", "größe"]
    assert response.json()["row_count"] == 1


def test_bytes_the_schema_no_longer_admits_are_refused(api, stored) -> None:
    before = stored.snapshot()

    response = api.upload("pixel.png", PNG)

    assert response.status_code == 422
    assert response.json()["detail"] == "file: the file is not UTF-8 text: invalid bytes on line 1"
    assert stored.snapshot() == before
