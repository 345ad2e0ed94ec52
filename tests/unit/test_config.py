"""Configuration: precedence (flag > environment > env file > default), parsing, derivation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke import Context, Exit

from desbordante_ops.core.settings import (
    BACKEND_KEYS,
    DEFAULTS,
    MASK,
    REPO_ROOT,
    SECRET_KEYS,
    TOOLKIT_KEYS,
    cluster_config,
    load_config,
    parse_sets,
    read_env_file,
)
from desbordante_ops.tasks.config import config as config_task
from desbordante_service.settings import SECRET_FIELDS, Settings

# The keys the backend requires (no default) in every environment.
REQUIRED = (
    "POSTGRES_USER=u\nPOSTGRES_HOST=h\nPOSTGRES_DB=d\nRABBITMQ_DEFAULT_USER=r\nRABBITMQ_HOST=q\n"
)


def make_root(tmp_path: Path, text: str, name: str = "local") -> Path:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / f"{name}.env").write_text(REQUIRED + text)
    return tmp_path


def test_precedence_flag_environment_file_default(tmp_path: Path) -> None:
    root = make_root(tmp_path, "POSTGRES_HOST=file-host\nPOSTGRES_PORT=6000\nPOSTGRES_DB=file-db\n")
    cfg = load_config(
        "local",
        flags={"POSTGRES_HOST": "flag-host"},
        environ={"POSTGRES_HOST": "env-host", "POSTGRES_PORT": "7000", "PATH": "/bin"},
        root=root,
    )
    assert (cfg.value("POSTGRES_HOST"), cfg.source("POSTGRES_HOST")) == ("flag-host", "flag")
    assert (cfg.value("POSTGRES_PORT"), cfg.source("POSTGRES_PORT")) == ("7000", "environment")
    assert (cfg.value("POSTGRES_DB"), cfg.source("POSTGRES_DB")) == ("file-db", "env/local.env")
    assert (cfg.value("LOG_LEVEL"), cfg.source("LOG_LEVEL")) == ("INFO", "default")
    assert cfg.backend.POSTGRES_PORT == 7000
    assert "PATH" not in cfg  # only known keys come from the process environment


def test_os_environ_is_not_modified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTGRES_HOST", raising=False)
    load_config("local", root=make_root(tmp_path, "POSTGRES_HOST=somewhere\n"), environ={})
    import os

    assert "POSTGRES_HOST" not in os.environ


def test_env_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text('# comment\n\nA=1\nB="two words"  # trailing\nC=\nD=a=b\n')
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "", "D": "a=b"}


def test_env_file_errors(tmp_path: Path) -> None:
    with pytest.raises(Exit, match="not found"):
        read_env_file(tmp_path / "missing.env")
    bare = tmp_path / "bare.env"
    bare.write_text("JUSTAKEY\n")
    with pytest.raises(Exit, match="JUSTAKEY=VALUE"):
        read_env_file(bare)
    secret = tmp_path / "secret.env"
    secret.write_text("POSTGRES_PASSWORD=x\n")
    with pytest.raises(Exit, match="must not be in an env file"):
        read_env_file(secret)


def test_a_missing_required_key_says_where_to_set_it(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "local.env").write_text("POSTGRES_HOST=h\n")
    with pytest.raises(Exit, match=r"RABBITMQ_DEFAULT_USER is not set; set it in env/local.env"):
        load_config("local", root=tmp_path, environ={})


def test_unknown_environment_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(Exit, match="Unknown environment 'qa'"):
        load_config("qa")
    root = make_root(tmp_path, "POSTGRES_PORT=abc\n")
    with pytest.raises(Exit, match=re.escape("POSTGRES_PORT='abc' (from env/local.env)")):
        load_config("local", root=root, environ={})
    with pytest.raises(Exit, match=re.escape("API_REPLICAS='-1' (from flag)")):
        load_config("local", {"API_REPLICAS": "-1"}, root=root, environ={"POSTGRES_PORT": "1"})
    cfg = load_config("local", root=root, environ={"POSTGRES_PORT": "1"})
    with pytest.raises(Exit, match="NOPE"):
        cfg.value("NOPE")


def test_unknown_keys_are_refused_with_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(Exit, match="unknown key POSTGRES_HOTS"):
        load_config("local", root=make_root(tmp_path, "POSTGRES_HOTS=x\n"), environ={})
    with pytest.raises(Exit, match="--set NOPE: unknown key"):
        parse_sets(["NOPE=1"])


def test_cluster_config_refuses_local() -> None:
    with pytest.raises(Exit, match="use one of stage, prod"):
        cluster_config("local")
    assert cluster_config("prod").namespace == "desbordante-prod"


def test_keys_come_from_the_backend_settings_and_the_toolkit_model() -> None:
    assert set(BACKEND_KEYS) == set(Settings.model_fields) - set(SECRET_FIELDS)
    assert set(SECRET_KEYS) == set(SECRET_FIELDS)
    assert not set(TOOLKIT_KEYS) & set(Settings.model_fields)
    assert set(DEFAULTS) == {*BACKEND_KEYS, *TOOLKIT_KEYS, *SECRET_KEYS}
    assert {"TASK_QUEUE", "SHUTDOWN_GRACE_SECONDS"} <= set(BACKEND_KEYS)
    assert DEFAULTS["TASK_QUEUE"] == str(Settings.model_fields["TASK_QUEUE"].default)


def test_kubeconfig_follows_the_kubeconfig_variable(tmp_path: Path) -> None:
    root = make_root(tmp_path, "", "stage")
    cfg = load_config("stage", environ={"KUBECONFIG": "/x/a.yaml:/x/b.yaml"}, root=root)
    assert (cfg.toolkit.KUBECONFIG_PATH, cfg.source("KUBECONFIG_PATH")) == (
        "/x/a.yaml",
        "environment (KUBECONFIG)",
    )
    assert load_config("stage", environ={}, root=root).toolkit.KUBECONFIG_PATH.endswith(
        ".kube/config"
    )


def test_derived_values(tmp_path: Path) -> None:
    root = make_root(tmp_path, "APPLICATION_SERVER_PORT=9100\nUPLOADED_FILES_DIR_PATH=up\n")
    cfg = load_config("local", environ={"FLOWER_PORT": "9200"}, root=root)
    assert cfg.value("API_BASE_URL") == "http://127.0.0.1:9100"
    assert cfg.value("FLOWER_BASE_URL") == "http://127.0.0.1:9200"
    assert cfg.value("UPLOADED_FILES_DIR_PATH") == str(root / "up")
    assert cfg.value("LOCAL_RUN_DIR") == str(root / ".run" / "local")
    assert cfg.namespace == "desbordante-local"
    explicit = load_config("local", flags={"API_BASE_URL": "http://x:1"}, environ={}, root=root)
    assert explicit.value("API_BASE_URL") == "http://x:1"


def test_stage_urls_derive_from_hosts(tmp_path: Path) -> None:
    root = make_root(tmp_path, "API_HOST=api.example\nFLOWER_INGRESS_HOST=fl.example\n", "stage")
    cfg = load_config("stage", environ={}, root=root)
    assert cfg.value("API_BASE_URL") == "https://api.example"
    assert cfg.value("FLOWER_BASE_URL") == "https://fl.example"
    assert cfg.namespace == "desbordante-stage"
    plain = load_config("stage", flags={"TLS_MODE": "off"}, environ={}, root=root)
    assert plain.value("API_BASE_URL") == "http://api.example"
    for mode in ("auto", "acme", "selfsigned"):  # auto picks acme or selfsigned: both HTTPS
        for host in ("api.example.org", "api.localhost", "203.0.113.7"):
            flags = {"TLS_MODE": mode, "API_HOST": host}
            cfg = load_config("stage", flags=flags, environ={}, root=root)
            assert cfg.value("API_BASE_URL") == f"https://{host}", (mode, host)


def test_backend_env_has_no_secrets_or_toolkit_keys(tmp_path: Path) -> None:
    cfg = load_config(
        "local", environ={"POSTGRES_PASSWORD": "hunter2"}, root=make_root(tmp_path, "")
    )
    env = cfg.backend_env()
    assert set(env) <= set(BACKEND_KEYS)
    assert "hunter2" not in env.values()
    assert "IMAGE_NAME" not in env


def test_config_task_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWER_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("POSTGRES_HOST", "dbhost")
    config_task(Context(), env="local", set_=["LOG_LEVEL=DEBUG"])
    out = capsys.readouterr().out
    assert "s3cr3t-value" not in out
    assert MASK in out
    for text in ("dbhost", "environment", "DEBUG", "flag", "env/local.env", "default"):
        assert text in out


def test_parse_sets() -> None:
    pairs = ["LOG_LEVEL=DEBUG", "FLOWER_URL_PREFIX=x=y", "IMAGE_REGISTRY="]
    assert parse_sets(pairs) == {
        "LOG_LEVEL": "DEBUG",
        "FLOWER_URL_PREFIX": "x=y",
        "IMAGE_REGISTRY": "",
    }
    assert parse_sets(None) == {}
    with pytest.raises(Exit, match="KEY=VALUE"):
        parse_sets(["novalue"])


# --- the real env files -----------------------------------------------------------------------

ENV_LINE = re.compile(r"^[A-Z][A-Z0-9_]*=[^\s\"']*$")


@pytest.mark.parametrize("name", ["local", "stage", "prod"])
def test_env_files_are_plain_and_documented(name: str) -> None:
    path = REPO_ROOT / "env" / f"{name}.env"
    readme = (REPO_ROOT / "env" / "README.md").read_text()
    values = read_env_file(path)
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert ENV_LINE.match(line), f"{path.name}: not a plain KEY=VALUE line: {line!r}"
    for key in values:
        assert key in DEFAULTS, f"{path.name}: {key} is not a known setting"
        assert f"`{key}`" in readme, f"{key} is not explained in env/README.md"
        assert key not in SECRET_KEYS


def test_every_setting_is_documented() -> None:
    readme = (REPO_ROOT / "env" / "README.md").read_text()
    missing = [key for key in DEFAULTS if f"`{key}`" not in readme]
    assert not missing, f"not explained in env/README.md: {missing}"


@pytest.mark.parametrize(
    ("name", "host", "flower"),
    [
        ("stage", "api.stage.desbordante.localhost", "flower.stage.desbordante.localhost"),
        ("prod", "api.desbordante.localhost", "flower.desbordante.localhost"),
    ],
)
def test_cluster_env_values(name: str, host: str, flower: str) -> None:
    """The shipped hosts are .localhost names (a local cluster works without DNS): TLS_MODE=auto
    serves them with Traefik's self-signed certificate, over HTTPS."""
    cfg = load_config(name, environ={})
    assert cfg.value("POSTGRES_HOST") == "postgres"
    assert cfg.value("RABBITMQ_HOST") == "rabbitmq"
    assert cfg.value("API_HOST") == host
    assert cfg.value("API_BASE_URL") == f"https://{host}"
    assert cfg.value("FLOWER_INGRESS_HOST") == flower
    assert cfg.value("FLOWER_BASE_URL") == f"https://{flower}"
    assert cfg.value("TLS_MODE") == "auto"
    assert cfg.value("UPLOADED_FILES_DIR_PATH") == "/data/uploads"
    assert cfg.value("WORKER_CONCURRENCY") == "1"
    assert cfg.value("FLOWER_HOST") == "0.0.0.0"  # noqa: S104 - bind address, not a host name
    assert cfg.namespace == f"desbordante-{name}"
