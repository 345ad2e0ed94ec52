"""TLS_MODE=auto and the TLS mode in effect (cluster/manifests/edge.py `tls_choice`): the rules,
that every TLS decision follows the mode in effect rather than TLS_MODE, and how the e2e suite
reaches a local cluster with the shipped `.localhost` hosts (tests/e2e/target.py) — against a
real TLS server on loopback serving a self-signed certificate, as Traefik does."""

from __future__ import annotations

import base64
import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.target import LoopbackTransport, Target, environment_target, is_loopback_name
from invoke import Exit
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster import certificates
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.manifests import edge, traefik
from desbordante_ops.core.settings import EnvConfig, load_config

STAGE_API = "api.stage.desbordante.localhost"
STAGE_FLOWER = "flower.stage.desbordante.localhost"
PUBLIC = {
    "API_HOST": "api.example.org",
    "FLOWER_INGRESS_HOST": "flower.example.org",
    "ACME_EMAIL": "ops@example.org",
}
OPENSSL_TIMEOUT_SECONDS = 60


def stage(**flags: str) -> EnvConfig:
    return load_config("stage", flags=flags, environ={})


def hosts(api: str, flower: str) -> dict[str, str]:
    return {"API_HOST": api, "FLOWER_INGRESS_HOST": flower}


# --- The rules ------------------------------------------------------------------------------


def test_auto_on_the_shipped_localhost_names_is_self_signed() -> None:
    for env, api, flower in (
        ("stage", STAGE_API, STAGE_FLOWER),
        ("prod", "api.desbordante.localhost", "flower.desbordante.localhost"),
    ):
        choice = edge.tls_choice(load_config(env, environ={}))
        assert (choice.mode, choice.requested, choice.auto) == ("selfsigned", "auto", True)
        assert choice.why == (
            f"TLS_MODE=auto: {api} and {flower} are .localhost names, so Traefik's self-signed "
            "certificate"
        )
        assert choice.describe() == f"TLS selfsigned ({choice.why})"
        assert edge.describe_tls(load_config(env, environ={})) == choice.describe()


def test_auto_on_public_names_is_acme() -> None:
    choice = edge.choose_tls("auto", hosts("api.example.org", "flower.example.org"))
    assert choice.mode == "acme"
    assert choice.why == (
        "TLS_MODE=auto: api.example.org and flower.example.org are public DNS names, so "
        "Let's Encrypt (ACME)"
    )
    # Case and a trailing dot do not change what a name is.
    assert edge.choose_tls("auto", hosts("API.Example.ORG.", "f.example.org")).mode == "acme"
    assert edge.choose_tls("auto", hosts("API.LOCALHOST", "f.example.org")).mode == "selfsigned"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("api.localhost", "a .localhost name"),
        ("localhost", "a .localhost name"),
        ("desbordante.local", "a .local name"),
        ("api.corp.internal", "a .internal name"),
        ("api.test", "a .test name"),
        ("api.example", "a .example name"),
        ("api.invalid", "a .invalid name"),
        ("api.lan", "a .lan name"),
        ("api.home.arpa", "a .home.arpa name"),
        ("api.localdomain", "a .localdomain name"),
        ("desbordante", "a single-label name"),
        ("203.0.113.7", "an IP address"),
        ("2001:db8::1", "an IP address"),
        ("[2001:db8::1]", "an IP address"),
        ("", "not set"),
        ("api.example.org", None),
        ("desbordante.localhost.example.org", None),  # a public name containing "localhost"
        ("api.locals.org", None),
    ],
)
def test_which_names_no_public_ca_issues_for(host: str, kind: str | None) -> None:
    assert edge.host_kind(host) == kind
    expected = "acme" if kind is None else "selfsigned"
    assert edge.choose_tls("auto", hosts(host, "flower.example.org")).mode == expected


def test_every_private_suffix_is_self_signed() -> None:
    assert ".localhost" in edge.PRIVATE_SUFFIXES
    for suffix in edge.PRIVATE_SUFFIXES:
        choice = edge.choose_tls("auto", hosts(f"api{suffix}", f"flower{suffix}"))
        assert choice.mode == "selfsigned", suffix
        assert f"are {suffix} names" in choice.why, suffix


def test_ip_addresses_and_unset_hosts_are_named_in_the_reason() -> None:
    choice = edge.choose_tls("auto", hosts("203.0.113.7", "198.51.100.2"))
    assert choice.mode == "selfsigned"
    assert choice.why.startswith("TLS_MODE=auto: 203.0.113.7 and 198.51.100.2 are IP addresses")
    unset = edge.choose_tls("auto", hosts("", "flower.localhost"))
    assert unset.why.startswith(
        "TLS_MODE=auto: API_HOST is not set, flower.localhost is a .localhost name, so"
    )


def test_mixed_hosts_are_self_signed_for_every_host_and_say_why() -> None:
    """One mode serves both hosts (Traefik is asked for a certificate per router, and Let's
    Encrypt refuses a .localhost name): auto takes ACME only when every host is public."""
    for api, flower in (
        ("api.example.org", "flower.localhost"),
        ("api.localhost", "flower.example.org"),
    ):
        choice = edge.choose_tls("auto", hosts(api, flower))
        public = api if flower.endswith(".localhost") else flower
        private = flower if public == api else api
        assert choice.mode == "selfsigned"
        assert choice.why == (
            f"TLS_MODE=auto: {private} is a .localhost name, so Traefik's self-signed "
            f"certificate for every host (ACME only when every host is public; only {public} is)"
        )


def test_one_host_for_both_is_named_once() -> None:
    choice = edge.choose_tls("auto", hosts("desbordante.localhost", "desbordante.localhost"))
    assert choice.why.startswith("TLS_MODE=auto: desbordante.localhost is a .localhost name,")


@pytest.mark.parametrize("mode", ["acme", "selfsigned", "off"])
@pytest.mark.parametrize("names_", [("api.localhost", "f.localhost"), ("a.example.org", "b.org")])
def test_explicit_modes_stay_whatever_the_hosts(mode: str, names_: tuple[str, str]) -> None:
    choice = edge.choose_tls(mode, hosts(*names_), "env/stage.env")
    assert (choice.mode, choice.auto) == (mode, False)
    assert choice.why == f"TLS_MODE={mode} (set in env/stage.env)"


def test_the_reason_names_where_an_explicit_mode_was_set() -> None:
    assert edge.tls_choice(stage(TLS_MODE="off")).why == "TLS_MODE=off (set in a --set flag)"
    cfg = load_config("stage", environ={"TLS_MODE": "acme"})
    assert edge.tls_choice(cfg).why == "TLS_MODE=acme (set in the process environment)"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'https'"):
        edge.choose_tls("https", hosts("a.example.org", "b.example.org"))
    with pytest.raises(Exit, match="TLS_MODE='https'"):  # the settings name it first
        stage(TLS_MODE="https")


# --- Every TLS decision follows the mode in effect --------------------------------------------


@dataclass(frozen=True)
class Case:
    flags: dict[str, str]
    mode: str
    resolver: bool = False
    warnings: int = 0
    certificates: int = 0
    scheme: str = "https"


CASES = {
    "shipped (auto, .localhost)": Case({}, "selfsigned"),
    "auto, public names": Case(PUBLIC, "acme", resolver=True, certificates=2),
    "auto, mixed": Case({**PUBLIC, "API_HOST": "api.localhost"}, "selfsigned"),
    "acme, .localhost (as before)": Case(
        {"TLS_MODE": "acme", "ACME_EMAIL": "ops@example.org"},
        "acme",
        resolver=True,
        warnings=2,
        certificates=2,
    ),
    "selfsigned, public names": Case({**PUBLIC, "TLS_MODE": "selfsigned"}, "selfsigned"),
    "off": Case({"TLS_MODE": "off"}, "off", scheme="http"),
}


@pytest.mark.parametrize("name", CASES)
def test_every_decision_reads_the_mode_in_effect(name: str) -> None:
    case = CASES[name]
    cfg = stage(**case.flags)
    assert edge.tls_choice(cfg).mode == case.mode
    assert edge.tls_on(cfg) == (case.mode != "off")
    assert ("https" in edge.components(cfg)) == (case.mode != "off")
    annotations = [
        patch["patch"]
        for patch in edge.release_patches(cfg)
        if patch["target"]["kind"] == "Ingress"
    ]
    assert any("certresolver" in text for text in annotations) == case.resolver
    values = traefik.traefik_values(cfg)
    assert (edge.RESOLVER in values.get("certificatesResolvers", {})) == case.resolver
    assert ("persistence" in values) == case.resolver
    assert len(traefik.acme_warnings(cfg)) == case.warnings
    checks = certificates.tls_checks(cfg, lambda host: certificates.Served(host, problem="-"))
    assert len(checks) == 1 + case.certificates
    assert checks[0].run().detail.startswith(f"{case.mode}: ")
    assert edge.tls_choice(cfg).why in checks[0].run().detail
    toolkit = cfg.toolkit
    urls = (toolkit.API_BASE_URL, toolkit.FLOWER_BASE_URL)
    assert urls == (
        f"{case.scheme}://{toolkit.API_HOST}",
        f"{case.scheme}://{toolkit.FLOWER_INGRESS_HOST}",
    )


def test_auto_with_public_names_needs_an_email_and_says_why() -> None:
    with pytest.raises(Exit) as raised:
        edge.check(stage(**{**PUBLIC, "ACME_EMAIL": ""}))
    message = str(raised.value.message)
    assert message.startswith(
        "TLS_MODE=auto picked ACME (Let's Encrypt) because every host is a public DNS name "
        "(api.example.org and flower.example.org)"
    )
    assert "set ACME_EMAIL in env/stage.env, or TLS_MODE=selfsigned" in message
    with pytest.raises(Exit, match=r"^TLS_MODE=acme needs ACME_EMAIL"):  # explicit: as before
        edge.check(stage(TLS_MODE="acme", ACME_EMAIL=""))
    edge.check(stage(ACME_EMAIL=""))  # the shipped .localhost names need no e-mail


# --- The e2e target of a local cluster ------------------------------------------------------


VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1", "gitCommit": "0", "gitTreeState":
    "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc",
    "platform": "linux/amd64",
}  # fmt: skip


KEYS = {  # the key of the password in each Secret
    names.FlowerSecret.NAME: names.FlowerSecret.PASSWORD,
    names.ApiAuthSecret.NAME: names.ApiAuthSecret.PASSWORD,
}


def seed_password(server: FakeApiServer, name: str, password: str) -> None:
    """The Secret NAME in desbordante-stage holding PASSWORD under its key."""
    encoded = base64.b64encode(password.encode()).decode()
    server.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "desbordante-stage"},
            "data": {KEYS[name]: encoded},
        }
    )


def no_cluster(tmp_path: Path, **flags: str) -> EnvConfig:
    return stage(KUBECONFIG_PATH=str(tmp_path / "missing.kubeconfig"), **flags)


def test_stage_target_of_a_local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--env stage` with the shipped settings: the .localhost URLs, certificate not verified
    (self-signed in effect), passwords from the environment when no cluster answers."""
    monkeypatch.setenv("FLOWER_PASSWORD", "flower-pw")
    monkeypatch.setenv("API_AUTH_PASSWORD", "api-pw")
    target = environment_target("stage", no_cluster(tmp_path))
    assert (target.kind, target.api_url, target.flower_url) == (
        "env:stage",
        f"https://{STAGE_API}",
        f"https://{STAGE_FLOWER}",
    )
    assert target.flower_auth == ("admin", "flower-pw")
    assert target.api_auth == ("desbordante", "api-pw")  # stage is restricted
    assert target.verify is False and target.loopback_names
    assert target.tls.startswith("TLS selfsigned (TLS_MODE=auto: ")
    (transport,) = target.client_options().values()
    assert isinstance(transport, LoopbackTransport) and transport.verify is False


def test_stage_target_reads_the_passwords_from_the_cluster_secrets(
    fake_api: FakeApiServer, admin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWER_PASSWORD", "not-this-one")  # the Secret wins
    monkeypatch.delenv("API_AUTH_PASSWORD", raising=False)
    seed_password(fake_api, names.FlowerSecret.NAME, "from-secret")
    seed_password(fake_api, names.ApiAuthSecret.NAME, "api")
    target = environment_target("stage", stage(KUBECONFIG_PATH=str(admin_kubeconfig)))
    assert target.flower_auth == ("admin", "from-secret")
    assert target.api_auth == ("desbordante", "api")
    asked = [r.path.split("?")[0] for r in fake_api.requests if "/secrets/" in r.path]
    secrets = [path.rsplit("/", 1)[-1] for path in asked]
    assert secrets == [names.FlowerSecret.NAME, names.ApiAuthSecret.NAME]
    assert target.verify is False and target.api_url == f"https://{STAGE_API}"


def test_certificates_are_verified_unless_self_signed_is_in_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWER_PASSWORD", raising=False)
    public = environment_target("stage", no_cluster(tmp_path, **PUBLIC))  # auto -> acme
    assert public.verify is True and public.client_options() == {}  # httpx's own defaults
    assert public.flower_auth is None and "no Flower password" in public.flower_skip_reason
    forced = environment_target("stage", no_cluster(tmp_path, **PUBLIC, TLS_MODE="selfsigned"))
    assert forced.verify is False
    assert forced.client_options()["transport"].verify is False
    acme_local = environment_target("stage", no_cluster(tmp_path, TLS_MODE="acme"))
    assert acme_local.verify is True  # explicit acme: verified, even on .localhost names
    assert acme_local.client_options()["transport"].verify is True
    plain = environment_target("stage", no_cluster(tmp_path, TLS_MODE="off"))
    assert plain.api_url == f"http://{STAGE_API}" and plain.verify is True


def test_loopback_names() -> None:
    for name in ("localhost", "api.localhost", "API.Stage.Desbordante.LOCALHOST."):
        assert is_loopback_name(name), name
    for name in ("127.0.0.1", "api.example.org", "localhost.example.org", "mylocalhost"):
        assert not is_loopback_name(name), name
    local = Target(kind="local", api_url="http://127.0.0.1:8000")
    assert local.client_options() == {}  # local stack and --base-url: unchanged


# --- Reaching a .localhost name on loopback, against a real TLS server -----------------------


@dataclass
class Seen:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)
    sni: list[str | None] = field(default_factory=list)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate like Traefik's default one: self-signed, no name of ours in it."""
    cert, key = directory / "default.crt", directory / "default.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=TRAEFIK DEFAULT CERT",
        ],
        check=True,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_SECONDS,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def edge_server(tmp_path: Path) -> Iterator[tuple[int, Seen]]:
    """HTTPS on a free loopback port with a self-signed certificate, recording each request's
    Host header and each handshake's SNI; /moved redirects (relative) to /health/live."""
    seen = Seen()
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def record_sni(_sock: Any, name: str | None, _context: ssl.SSLContext) -> None:
        seen.sni.append(name)

    context.sni_callback = record_sni

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's pooled connection is reused
        timeout = 5

        def do_GET(self) -> None:
            seen.requests.append((self.headers["Host"], self.path))
            moved = self.path == "/moved"
            self.send_response(307 if moved else 200)
            if moved:
                self.send_header("Location", "/health/live")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_localhost_name_reaches_loopback_with_its_host_and_sni(
    edge_server: tuple[int, Seen],
) -> None:
    port, seen = edge_server
    target = Target(
        kind="env:stage",
        api_url=f"https://{STAGE_API}:{port}",
        flower_url=f"https://{STAGE_FLOWER}:{port}",
        verify=False,
    )
    with httpx.Client(base_url=target.api_url, timeout=5, **target.client_options()) as api:
        assert api.get("/health/live").text == "ok"
        moved = api.get("/moved", follow_redirects=True)
        assert moved.status_code == 200 and moved.url.host == STAGE_API  # the name, kept
        # One pool per name: the Flower request gets its own handshake with its own SNI.
        assert api.get(f"{target.flower_url}/").status_code == 200
    assert seen.requests == [
        (f"{STAGE_API}:{port}", "/health/live"),
        (f"{STAGE_API}:{port}", "/moved"),
        (f"{STAGE_API}:{port}", "/health/live"),
        (f"{STAGE_FLOWER}:{port}", "/"),
    ]
    assert seen.sni == [STAGE_API, STAGE_FLOWER]  # a shared pool would reuse the first


def test_the_self_signed_certificate_is_refused_when_verifying(
    edge_server: tuple[int, Seen],
) -> None:
    port, seen = edge_server
    target = Target(kind="env:stage", api_url=f"https://{STAGE_API}:{port}")  # verify=True
    with (
        httpx.Client(base_url=target.api_url, timeout=5, **target.client_options()) as api,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        api.get("/health/live")
    assert seen.requests == [] and seen.sni == [STAGE_API]  # reached loopback, then refused
