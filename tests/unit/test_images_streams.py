"""What images.build/push make of the engine's JSON streams, and the wheelhouse plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from invoke import Exit

from desbordante_ops.image import build, push, wheelhouse

Stream = list[dict[str, Any]]  # the engine's JSON messages

BUILD_OK: Stream = [
    {"stream": "Step 1/3 : FROM base\n"},
    {"stream": " ---> 1234\n"},
    {"stream": "Step 2/3 : RUN pip install deps\n"},
    {"stream": " ---> Using cache\n"},
    {"stream": "Step 3/3 : COPY app /app\n"},
    {"stream": " ---> 5678\n"},
    {"aux": {"ID": "sha256:abc"}},
    {"stream": "Successfully built abc\n"},
]


def test_build_stream_gives_image_id_and_cached_steps() -> None:
    image_id, cached = build.follow_build(BUILD_OK)
    assert image_id == "sha256:abc"
    assert cached == ["RUN pip install deps"]


def test_build_error_names_the_failing_step() -> None:
    stream: Stream = [
        {"stream": "Step 1/2 : FROM base\n"},
        {"stream": "Step 2/2 : RUN make everything\n"},
        {"stream": "make: *** no rule\n"},
        {
            "error": "The command '/bin/sh -c make everything' returned a non-zero code: 2",
            "errorDetail": {
                "message": "The command '/bin/sh -c make everything' returned a non-zero code: 2"
            },
        },
    ]
    with pytest.raises(Exit) as raised:
        build.follow_build(stream)
    assert "step 2/2 `RUN make everything`" in str(raised.value.message)
    assert "non-zero code: 2" in str(raised.value.message)


def test_push_error_inside_the_stream_fails() -> None:
    stream: Stream = [
        {"status": "The push refers to repository [127.0.0.1:5000/o/n]"},
        {"status": "Preparing", "progressDetail": {}, "id": "0123456789ab"},
        {
            "errorDetail": {"message": "unauthorized: authentication required"},
            "error": "unauthorized: authentication required",
        },
    ]
    with pytest.raises(Exit, match="unauthorized: authentication required"):
        push.follow_push(stream, "127.0.0.1:5000/o/n:t")


def test_push_stream_gives_digest() -> None:
    stream: Stream = [
        {"status": "Pushing", "progressDetail": {"current": 5, "total": 10}, "id": "0123456789ab"},
        {"status": "Pushed", "progressDetail": {}, "id": "0123456789ab"},
        {"status": "t: digest: sha256:d size: 1"},
        {"progressDetail": {}, "aux": {"Tag": "t", "Digest": "sha256:d", "Size": 1}},
    ]
    assert push.follow_push(stream, "r/o/n:t") == "sha256:d"


def test_push_stream_without_digest_fails() -> None:
    with pytest.raises(Exit, match="without a digest"):
        push.follow_push([{"status": "Preparing", "id": "0123456789ab"}], "r/o/n:t")


def test_credentials_from_environment_only_when_complete(tmp_path: Path) -> None:
    assert push.auth_from_environment({}) is None
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {"REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD_FILE": str(secret)}
    assert push.auth_from_environment(env) == {"username": "u", "password": "s3cret"}
    with pytest.raises(Exit, match="Set both"):
        push.auth_from_environment({"REGISTRY_USERNAME": "u"})


def test_wheelhouse_is_for_cp311_manylinux_binary_wheels(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\na==1\nb[c]==2\n")
    reqs = wheelhouse.requirements(lock)
    assert reqs == ["a==1", "b[c]==2", "setuptools>=69"]
    command = wheelhouse.download_command(reqs, tmp_path / "wh")
    assert "--only-binary=:all:" in command
    assert command[command.index("--abi") + 1] == "cp311"
    assert "manylinux_2_28_x86_64" in command and "manylinux2014_x86_64" in command
    before = wheelhouse.cache_key(lock)
    lock.write_text("a==2\n")
    assert wheelhouse.cache_key(lock) != before


def test_wheelhouse_is_current_only_with_matching_key(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    lock = tmp_path / "backend" / "requirements.lock"
    lock.write_text("a==1\n")
    assert not wheelhouse.is_current(tmp_path)
    (tmp_path / "wheelhouse").mkdir()
    (tmp_path / "wheelhouse" / wheelhouse.KEY_FILE).write_text(wheelhouse.cache_key(lock))
    assert wheelhouse.is_current(tmp_path)
    lock.write_text("y==1\n")
    assert not wheelhouse.is_current(tmp_path)
