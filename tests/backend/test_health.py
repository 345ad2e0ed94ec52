"""/health/live and /health/ready against the real services."""

from __future__ import annotations

from pathlib import Path

import pytest

from desbordante_service.settings import get_settings


def test_live(api) -> None:
    assert api.client.get("/health/live").json() == {"status": "ok"}


def test_ready_when_everything_is_reachable(api) -> None:
    response = api.client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}


@pytest.fixture
def override_settings(app):
    def _override(**changes: object) -> None:
        settings = get_settings().model_copy(update=changes)
        app.dependency_overrides[get_settings] = lambda: settings

    yield _override
    app.dependency_overrides.clear()


def test_ready_names_an_unreachable_broker(api, override_settings) -> None:
    override_settings(RABBITMQ_PORT=1)  # nothing listens on loopback port 1

    response = api.client.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["detail"] == "not ready: broker failed; retry later"
    assert body["database"] == "ok"
    assert body["storage"] == "ok"
    assert body["broker"].startswith("error: ")


def test_ready_names_unusable_storage(api, override_settings, tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    override_settings(UPLOADED_FILES_DIR_PATH=not_a_directory)

    response = api.client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["detail"] == "not ready: storage failed; retry later"
    assert response.json()["storage"].startswith("error: ")
    assert response.json()["broker"] == "ok"
