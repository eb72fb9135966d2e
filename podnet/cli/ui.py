"""`podnet ui`: a fresh one-time login URL for the cluster's topology page.

Minted locally from the state directory's secret (the control plane checks it with the same
secret, and keeps no list of codes it issued), so it works without asking the cluster. The
link logs a browser in once; after that the page's session cookie lasts 7 days.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from podnet.auth import SecretError, load_secret, ui_login_code

UI_PATH = "/podnet/ui/"


def login_url(api: str, secret: bytes, now: float) -> str:
    return f"{api.rstrip('/')}{UI_PATH}?login={ui_login_code(secret, now)}"


def run(info: dict[str, Any]) -> int:
    api = info.get("api")
    secret_file = info.get("secret_file")
    if not isinstance(api, str) or not isinstance(secret_file, str):
        print("podnet ui: cluster.json has no API address or secret file", file=sys.stderr)
        return 1
    try:
        secret = load_secret(Path(secret_file))
    except SecretError as e:
        print(f"podnet ui: {e}", file=sys.stderr)
        return 1
    print(login_url(api, secret, time.time()))
    if sys.stderr.isatty():
        print("(the link logs one browser in once; run `podnet ui` again for another)",
              file=sys.stderr)
    return 0
