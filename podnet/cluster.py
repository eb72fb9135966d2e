"""Where a running cluster is described: the state directory and its `cluster.json`.

`podnet up` writes `cluster.json`, the machine-readable truth about the running cluster:
API URL, secret file, the control plane and every node with its pid, address and podCIDR.
Every client command finds it through `--state-dir DIR`, else `PODNET_STATE_DIR`, else
`./.podnet`.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path(".podnet")


class ClusterNotFound(Exception):
    """No running cluster is described in the state directory."""


def state_dir(flag: str | Path | None) -> Path:
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("PODNET_STATE_DIR")
    return Path(env).expanduser() if env else DEFAULT_STATE_DIR


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    """Write JSON so readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_cluster(directory: Path) -> dict[str, Any]:
    path = directory / "cluster.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterNotFound(
            f"no cluster in {directory} (no cluster.json): start one with `podnet up` or pass "
            "--state-dir") from None
    except (OSError, ValueError) as e:
        raise ClusterNotFound(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or "api" not in data:
        raise ClusterNotFound(f"{path} does not describe a cluster")
    return data


def client_ssl(info: dict[str, Any]) -> ssl.SSLContext:
    """A TLS context that trusts the cluster's CA (from cluster.json's `ca_file`)."""
    from podnet.pki import client_context

    try:
        return client_context(Path(info["ca_file"]).read_bytes())
    except (KeyError, OSError) as e:
        raise ClusterNotFound(f"cannot read the cluster CA: {e}") from None


def write_kubeconfig(path: Path, api_url: str, token: str, ca_pem: bytes,
                     name: str = "podnet") -> None:
    """A kubeconfig for kubectl: one cluster (with its CA), one user with the bearer token."""
    import base64

    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": api_url,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin",
                                                  "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, path)
