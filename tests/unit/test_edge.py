"""The edge outside the render: Traefik's HelmChartConfig and who may apply it
(cluster/manifests/traefik.py, traefik_config.py) on the fake API server, the API's basic-auth
Secret and the smoke test's client (cluster/manifests/edge.py), the doctor's TLS rows against a
real TLS server on loopback (cluster/certificates.py), the edge settings, and the local
retention program."""

from __future__ import annotations

import base64
import configparser
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from invoke import Exit, MockContext
from supervisor.options import ServerOptions
from support.fakeapi.k3s import Cluster, prepare
from support.fakeapi.server import FakeApiServer
from support.fakeapi.tls import Tls, make_tls

from desbordante_ops.cluster import certificates
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.podexec import PodExec
from desbordante_ops.cluster.manifests import edge, traefik, traefik_config
from desbordante_ops.cluster.secrets.generate import ensure_secrets, generate_plan
from desbordante_ops.cluster.secrets.specs import SecretSpec
from desbordante_ops.core import plan
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.local.supervise import (
    RETENTION,
    SERVICES,
    StackPaths,
    programs,
    render_conf,
)
from desbordante_ops.tasks.config import config

ACCEPT_TIMEOUT_SECONDS = 30.0
MAX_HANDSHAKES = 10
HELM_CONFIGS = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmchartconfigs"


def stage(**flags: str) -> EnvConfig:
    return load_config("stage", flags=flags, environ={})


def prod(**flags: str) -> EnvConfig:
    return load_config("prod", flags=flags, environ={})


PUBLIC = {
    "API_HOST": "api.example.org",
    "FLOWER_INGRESS_HOST": "flower.example.org",
    "ACME_EMAIL": "ops@example.org",
}


def public_prod(**flags: str) -> EnvConfig:
    """Prod on a server with public DNS names: TLS_MODE=auto picks acme."""
    return prod(**{**PUBLIC, **flags})


def configure_traefik(k: Kube, cfg: EnvConfig) -> plan.Seen:
    """Run the Traefik step(s) of a deploy of CFG as K; what the plan printed and ran."""
    with plan.watching() as seen:
        plan.execute(plan.Plan("traefik", traefik_config.traefik_steps(k, cfg)))
    return seen[0]


def helm_writes(server: FakeApiServer) -> list[str]:
    return [r.method for r in server.writes() if r.path.startswith(HELM_CONFIGS)]


def secret_value(server: FakeApiServer, namespace: str, name: str, key: str) -> str:
    secret = server.get("Secret", name, namespace)
    assert secret is not None
    return base64.b64decode(secret["data"][key]).decode()


# --- Traefik's HelmChartConfig ----------------------------------------------------------------


def test_acme_values_set_the_resolver_a_volume_and_client_ips() -> None:
    values = traefik.traefik_values(public_prod())
    assert traefik.traefik_values(public_prod(TLS_MODE="acme")) == values
    acme = values["certificatesResolvers"][edge.RESOLVER]["acme"]
    assert acme["email"] == "ops@example.org"
    assert acme["httpChallenge"] == {"entryPoint": edge.WEB}
    assert acme["storage"].startswith(values["persistence"]["path"] + "/")
    assert values["persistence"]["enabled"] is True
    assert values["podSecurityContext"]["fsGroup"] == traefik.TRAEFIK_UID
    assert values["service"]["spec"]["externalTrafficPolicy"] == "Local"
    config = traefik.traefik_config(values)
    assert (config["kind"], config["metadata"]["namespace"]) == ("HelmChartConfig", "kube-system")
    assert config["apiVersion"] == "helm.cattle.io/v1" and set(config["spec"]) == {"valuesContent"}
    assert yaml.safe_load(config["spec"]["valuesContent"]) == values


def test_other_modes_keep_what_the_cluster_has() -> None:
    """Traefik is shared: stage on selfsigned must not drop prod's resolver or an admin's
    own values."""
    current = traefik.traefik_values(public_prod())
    current["logs"] = {"access": {"enabled": True}}
    values = traefik.traefik_values(stage(TLS_MODE="selfsigned"), current)
    assert values == current
    assert traefik.traefik_values(stage(), current) == current  # auto: .localhost, selfsigned
    assert traefik.traefik_values(stage(TLS_MODE="off")) == {
        "service": {"spec": {"externalTrafficPolicy": "Local"}}
    }


def test_admin_applies_the_config_once(k3s: Cluster) -> None:
    first = configure_traefik(k3s.admin, public_prod())
    assert first.ran == [
        (
            "configure",
            "Traefik (kube-system/traefik): client IPs kept, the Let's Encrypt resolver; "
            "Traefik restarts once",
        )
    ]
    stored = k3s.server.get("HelmChartConfig", "traefik", "kube-system")
    assert stored is not None
    assert yaml.safe_load(stored["spec"]["valuesContent"]) == traefik.traefik_values(public_prod())
    managers = {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]}
    assert ("desbordante-ops", "Apply") in managers
    assert helm_writes(k3s.server) == ["PATCH"]
    again = configure_traefik(k3s.admin, public_prod())
    assert again.rows == [("keep", "Traefik (kube-system/traefik): already configured")]
    assert again.ran == [] and helm_writes(k3s.server) == ["PATCH"]


def test_stage_keeps_the_resolver_prod_configured(k3s: Cluster) -> None:
    configure_traefik(k3s.admin, public_prod())
    assert configure_traefik(k3s.admin, stage()).ran == []  # selfsigned adds nothing
    stored = k3s.server.get("HelmChartConfig", "traefik", "kube-system")
    assert stored is not None
    values = yaml.safe_load(stored["spec"]["valuesContent"])
    assert edge.RESOLVER in values["certificatesResolvers"]


def test_devops_skips_the_cluster_wide_config_with_one_line(k3s: Cluster) -> None:
    prepare(k3s.admin, "stage")
    seen = configure_traefik(k3s.grant("devops"), stage())
    ((action, target),) = seen.rows
    assert action == "skip" and seen.ran == []
    assert "a cluster admin runs `invoke deploy`" in target
    assert helm_writes(k3s.server) == []


def test_a_cluster_without_helmchartconfig_is_skipped_with_one_line(k3s: Cluster) -> None:
    k3s.server.crds.discard("helm.cattle.io")
    seen = configure_traefik(k3s.admin, prod())
    ((action, target),) = seen.rows
    assert action == "skip" and "not k3s's bundled Traefik" in target
    assert helm_writes(k3s.server) == []


def test_acme_for_names_without_public_dns_warns() -> None:
    warnings = traefik.acme_warnings(prod(TLS_MODE="acme"))  # the env files ship *.localhost
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "Let's Encrypt issues no certificate: api.desbordante.localhost is not a public DNS name"
    )
    ip = prod(TLS_MODE="acme", API_HOST="203.0.113.7", FLOWER_INGRESS_HOST="f.example.org")
    assert [w for w in traefik.acme_warnings(ip) if "203.0.113.7 is an IP address" in w]
    assert traefik.acme_warnings(public_prod()) == []
    assert traefik.acme_warnings(public_prod(TLS_MODE="acme")) == []
    assert traefik.acme_warnings(prod(TLS_MODE="selfsigned")) == []
    assert traefik.acme_warnings(prod()) == []  # auto never picks acme for these names


# --- The API's basic auth -----------------------------------------------------------------------


def no_store(spec: SecretSpec) -> PodExec:
    """A pod exec that must never run: the api-auth password lives in its Secret only."""

    def run(argv: list[str], stdin: str) -> tuple[int, str]:
        raise AssertionError(f"{spec.name} is stored nowhere else, yet {argv} ran")

    return run


def test_generate_makes_the_api_auth_secret_with_a_bcrypt_line(k3s: Cluster) -> None:
    cfg = stage(API_AUTH_USER="team")
    ensure_secrets(cfg, k3s.admin)
    secret = names.ApiAuthSecret
    password = secret_value(k3s.server, cfg.namespace, secret.NAME, secret.PASSWORD)
    users = secret_value(k3s.server, cfg.namespace, secret.NAME, secret.USERS)
    user, hashed = users.split(":", 1)
    assert user == "team" and len(password) >= 43 and password not in users
    assert bcrypt.checkpw(password.encode(), hashed.encode())
    asked = len(k3s.server.requests)
    with plan.watching() as seen:
        plan.execute(generate_plan(cfg, k3s.admin, rotate="api-auth", exec_for=no_store))
    (rotated,) = [row for row in seen[0].ran if secret.NAME in row[1]]
    assert rotated[0] == "replace"
    new = secret_value(k3s.server, cfg.namespace, secret.NAME, secret.PASSWORD)
    new_users = secret_value(k3s.server, cfg.namespace, secret.NAME, secret.USERS)
    assert new != password and bcrypt.checkpw(new.encode(), new_users.split(":", 1)[1].encode())
    # Traefik reads the Secret live: nothing restarts (no Deployment is even asked about).
    later = k3s.server.requests[asked:]
    assert [r.path for r in later if "/deployments" in r.path or "/statefulsets" in r.path] == []


def test_smoke_client_reaches_the_api_through_traefik_with_credentials(k3s: Cluster) -> None:
    cfg = stage()
    ensure_secrets(cfg, k3s.admin)
    options = edge.ingress_client_options(cfg, k3s.admin.core)
    secret = names.ApiAuthSecret
    password = secret_value(k3s.server, cfg.namespace, secret.NAME, secret.PASSWORD)
    assert options["base_url"] == "https://127.0.0.1"  # auto on .localhost: self-signed HTTPS
    assert options["headers"] == {"Host": cfg.toolkit.API_HOST}
    assert options["auth"] == (cfg.toolkit.API_AUTH_USER, password)
    public = edge.ingress_client_options(prod(TLS_MODE="off"), k3s.admin.core)
    assert public["base_url"] == "http://127.0.0.1" and "auth" not in public
    k3s.server.remove("Secret", secret.NAME, cfg.namespace)
    with pytest.raises(Exit, match="desbordante-api-auth is missing"):
        edge.ingress_client_options(cfg, k3s.admin.core)


# --- Doctor: TLS mode and certificates ----------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files: Tls) -> Iterator[int]:
    """A TLS server on a free loopback port serving the test certificate (IP SAN 127.0.0.1):
    at most MAX_HANDSHAKES handshakes, for at most ACCEPT_TIMEOUT_SECONDS in all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    deadline = time.monotonic() + ACCEPT_TIMEOUT_SECONDS

    def serve() -> None:
        handshakes = 0
        while handshakes < MAX_HANDSHAKES and not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            handshakes += 1
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=ACCEPT_TIMEOUT_SECONDS)
    listener.close()


def test_served_certificate_says_when_it_expires(tls_server: int, tls_files: Tls) -> None:
    served = certificates.served_certificate(
        "127.0.0.1", port=tls_server, cafile=str(tls_files.ca_cert)
    )
    assert served.problem == "" and served.issuer == "fake-apiserver-ca"
    assert served.not_after is not None
    left = served.not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=1) < left <= dt.timedelta(days=2, minutes=5)  # openssl -days 2
    result = certificates.certificate_result(served)
    assert not result.ok and "renewal is failing" in result.detail  # < CERT_MIN_DAYS left
    later = served.not_after - dt.timedelta(days=60)
    assert certificates.certificate_result(served, now=later).ok


def test_an_untrusted_or_missing_certificate_is_a_problem(tls_server: int, tls_files: Tls) -> None:
    untrusted = certificates.served_certificate("127.0.0.1", port=tls_server)  # system CAs only
    assert untrusted.not_after is None and "not trusted" in untrusted.problem
    wrong_name = certificates.served_certificate(
        "api.example.org", port=tls_server, cafile=str(tls_files.ca_cert)
    )
    assert "not trusted" in wrong_name.problem
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nothing = certificates.served_certificate("127.0.0.1", port=closed_port, timeout=2)
    assert f"no TLS answer on 127.0.0.1:{closed_port}" in nothing.problem
    assert not certificates.certificate_result(nothing).ok


def test_doctor_rows_name_the_mode_and_each_hosts_certificate() -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=80)
    asked: list[str] = []

    def probe(host: str) -> certificates.Served:
        asked.append(host)
        return certificates.Served(host, not_after=future, issuer="Let's Encrypt")

    checks = certificates.tls_checks(public_prod(), probe)
    results = [check.run() for check in checks]
    assert results[0].ok and results[0].detail.startswith("acme: Let's Encrypt")
    assert "TLS_MODE=auto: api.example.org and flower.example.org are public DNS names" in (
        results[0].detail
    )
    assert asked == ["api.example.org", "flower.example.org"]
    assert all(r.ok and "days left" in r.detail for r in results[1:])
    (only,) = certificates.tls_checks(stage(TLS_MODE="off"), probe)
    assert "plain HTTP" in only.run().detail
    assert "TLS_MODE=off (set in a --set flag)" in only.run().detail
    (local,) = certificates.tls_checks(stage(), probe)  # the shipped .localhost names
    detail = local.run().detail
    assert detail.startswith("selfsigned: Traefik's own certificate")
    assert "api.stage.desbordante.localhost and flower.stage.desbordante.localhost are " in detail
    assert len(asked) == 2  # no certificate probed: nobody trusts a self-signed one


# --- Settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"TLS_MODE": "https"}, "TLS_MODE='https'"),
        ({"API_ACCESS": "private"}, "API_ACCESS='private'"),
        ({"EDGE_RATE_PERIOD": "1 minute"}, "EDGE_RATE_PERIOD='1 minute'"),
        ({"EDGE_INFLIGHT": "0"}, "EDGE_INFLIGHT='0'"),
        ({"API_AUTH_USER": "a:b"}, "API_AUTH_USER='a:b'"),
    ],
)
def test_unusable_edge_settings_are_one_clear_error(flags: dict[str, str], message: str) -> None:
    with pytest.raises(Exit, match=message):
        stage(**flags)


def test_acme_needs_an_email_and_hosts() -> None:
    with pytest.raises(Exit, match="TLS_MODE=acme needs ACME_EMAIL"):
        edge.check(prod(ACME_EMAIL="", TLS_MODE="acme"))
    with pytest.raises(Exit, match=r"TLS_MODE=auto picked ACME .* because every host is a public"):
        edge.check(public_prod(ACME_EMAIL=""))
    with pytest.raises(Exit, match="API_HOST is not set"):
        edge.check(prod(API_HOST=""))
    edge.check(prod(ACME_EMAIL="", TLS_MODE="selfsigned"))
    edge.check(prod(ACME_EMAIL=""))  # auto on .localhost names: no ACME, no e-mail needed
    edge.check(public_prod())


def test_invoke_config_shows_the_edge_settings(capsys: pytest.CaptureFixture[str]) -> None:
    config(MockContext(), env="stage")
    out = capsys.readouterr().out
    for key in ("TLS_MODE", "ACME_EMAIL", "API_ACCESS", "EDGE_RATE_AVERAGE", "EDGE_INFLIGHT"):
        assert key in out


# --- Local retention program ----------------------------------------------------------------


def parsed_conf(tmp_path: Path, env: dict[str, str]) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(render_conf(StackPaths(tmp_path), env, "/venv/bin/python", tmp_path))
    return parser


def test_retention_runs_hourly_under_supervisord_when_enabled(tmp_path: Path) -> None:
    assert programs({"RETENTION_DAYS": "30"}) == (*SERVICES, RETENTION)
    conf = parsed_conf(tmp_path, {"RETENTION_DAYS": "30"})
    section = f"program:{RETENTION}"
    assert conf.get(section, "command") == (
        "/venv/bin/python -m desbordante_service retention --interval 3600"
    )
    assert conf.get(section, "stopasgroup") == "true"
    assert conf.get(section, "autostart") == "false"  # `up` starts it like the services
    for off in ({}, {"RETENTION_DAYS": "0"}, {"RETENTION_DAYS": ""}):
        assert programs(off) == SERVICES
        assert not parsed_conf(tmp_path, off).has_section(section)


def test_supervisord_accepts_the_retention_program(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "run")
    paths.prepare()
    paths.conf.write_text(render_conf(paths, {"RETENTION_DAYS": "7"}, "/venv/bin/python", tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(paths.conf)])
    found = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(found) == {*SERVICES, RETENTION}
    assert found[RETENTION].environment["RETENTION_DAYS"] == "7"
    assert found[RETENTION].stopsignal == 15  # SIGTERM ends the loop between passes
