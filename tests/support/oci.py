"""Minimal OCI images pushed with the registry HTTP API (no Docker engine): an image config with
the OCI labels CI sets, one empty layer, a manifest under a tag. What auto-update reads from a
registry is exactly this: the tag, the manifest digest and the config's revision label."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import httpx

from desbordante_ops.image.registry import OCI_MANIFEST, REVISION_LABEL


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def empty_layer() -> tuple[bytes, str]:
    """(gzipped empty tar, digest of the uncompressed tar: the config's diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w"):
        pass
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), _digest(tar)


def push_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    """Upload DATA as a blob (monolithic POST then PUT); its digest."""
    digest = _digest(data)
    start = client.post(f"/v2/{repository}/blobs/uploads/")
    assert start.status_code == 202, start.text
    # The upload URL carries the registry's own state parameters: add the digest to them.
    location = httpx.URL(start.headers["location"]).copy_merge_params({"digest": digest})
    done = client.put(location, content=data)
    assert done.status_code == 201, done.text
    return digest


def push_image(
    address: str,
    auth: tuple[str, str],
    repository: str,
    tag: str,
    revision: str,
    labels: dict[str, str] | None = None,
) -> str:
    """Push REPOSITORY:TAG built from REVISION to the registry at ADDRESS; the manifest digest."""
    layer, diff_id = empty_layer()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": {
                REVISION_LABEL: revision,
                "org.opencontainers.image.source": "https://example.invalid/desbordante-ops",
                **(labels or {}),
            }
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    with httpx.Client(base_url=f"http://{address}", auth=auth, timeout=30) as client:
        config_digest = push_blob(client, repository, config_bytes)
        layer_digest = push_blob(client, repository, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        put = client.put(
            f"/v2/{repository}/manifests/{tag}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert put.status_code == 201, put.text
        assert put.headers["docker-content-digest"] == _digest(body)
        return _digest(body)
