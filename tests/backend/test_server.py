"""The real `api` entry point over a loopback socket: size cap against lying clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from serviceprocs import Api

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def server(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    api = Api(service_env, tmp_path_factory.mktemp("api") / "api.log")
    yield api.url
    api.stop()


def _raw_request(url: str, data: bytes) -> bytes:
    """Send raw bytes, then read the answer until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _multipart(content: bytes) -> bytes:
    return (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        + content
        + b"\r\n--B--\r\n"
    )


def test_honest_oversize_content_length_is_refused_before_the_body(server, stored) -> None:
    before = stored.snapshot()
    head = (
        "POST /api/v1/datasets HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\n"
        f"Content-Length: {10 * LIMIT}\r\n\r\n"
    ).encode()

    answer = _raw_request(server, head)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert f"limit of {LIMIT} bytes".encode() in answer
    assert stored.snapshot() == before


def test_lying_small_content_length_cannot_smuggle_a_large_file(server, stored) -> None:
    """Only the declared 200 bytes are read as the body; the file in it is incomplete.

    (Whatever the client sends after them is not part of this request, so it can never be
    stored as this upload.)
    """
    before = stored.snapshot()
    body = _multipart(b"a\n" + b"1\n" * LIMIT)
    head = (
        b"POST /api/v1/datasets HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 200\r\n\r\n"
    )

    answer = _raw_request(server, head + body[:200])

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"the multipart body is incomplete" in answer
    assert stored.snapshot() == before


def test_chunked_oversize_body_gets_413_over_a_real_socket(server, stored) -> None:
    before = stored.snapshot()

    def chunks() -> Iterator[bytes]:
        yield _multipart(b"")[:-9]  # opening of the file part
        for _ in range(3 * LIMIT // 65536):
            yield b"1\n" * 32768

    response = httpx.post(
        f"{server}/api/v1/datasets",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=B"},
        timeout=30,
    )

    assert response.status_code == 413
    assert stored.snapshot() == before
