"""HEALTHCHECK of the backend image: checks the role that PID 1 runs.

api     GET /health/ready on APPLICATION_SERVER_PORT (200 = healthy)
flower  GET /healthcheck on FLOWER_PORT (Flower's own unauthenticated probe)
worker  `desbordante-service worker-ping` (the local worker answers a ping)
migrate, retention  nothing to check (a one-shot job, or a loop that logs its failures)
Standard library only; exit 0 = healthy, 1 = unhealthy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

ROLES = ("api", "worker", "flower", "migrate", "retention")


def role() -> str:
    """The first argument of PID 1 that names a role (the image's CMD)."""
    args = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    return next((arg for arg in args if arg in ROLES), "api")


def http_ok(port_var: str, default_port: str, path: str) -> bool:
    prefix = os.environ.get("FLOWER_URL_PREFIX", "").strip("/") if port_var == "FLOWER_PORT" else ""
    url = f"http://127.0.0.1:{os.environ.get(port_var, default_port)}"
    url += f"/{prefix}{path}" if prefix else path
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed http URL
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    current = role()
    if current == "api":
        healthy = http_ok("APPLICATION_SERVER_PORT", "8000", "/health/ready")
    elif current == "flower":
        healthy = http_ok("FLOWER_PORT", "5555", "/healthcheck")
    elif current == "worker":
        ping = [sys.executable, "-m", "desbordante_service", "worker-ping"]
        healthy = subprocess.run(ping, capture_output=True, timeout=20, check=False).returncode == 0
    else:
        healthy = True
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
