"""TLS material for the fake API server: a CA, a serving certificate for 127.0.0.1 and the
cluster admin's client certificate (CN=system:admin, O=system:masters, as k3s issues it), made
with the `openssl` CLI (EC P-256, valid 2 days)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.fakeapi.rbac import MASTERS

OPENSSL_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Tls:
    """A CA, a serving certificate for 127.0.0.1 and the admin's client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(
        ["openssl", *args], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_SECONDS
    )


def _signed(directory: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions + "\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.crt"),
        "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2",
        "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def make_tls(directory: Path) -> Tls:
    """Generate the CA and certificates into DIRECTORY (openssl CLI, EC P-256, 2 days)."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
        "-days", "2", "-subj", "/CN=fake-apiserver-ca",
    )  # fmt: skip
    server_cert, server_key = _signed(
        directory,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    admin_cert, admin_key = _signed(
        directory, "admin", f"/O={MASTERS}/CN=system:admin", "extendedKeyUsage=clientAuth"
    )
    return Tls(directory / "ca.crt", server_cert, server_key, admin_cert, admin_key)
