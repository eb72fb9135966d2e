"""Kubernetes name rules (RFC 1123 labels and subdomains), shared by validation and flags."""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns1123_label_error(name: str) -> str | None:
    """Why `name` is not a valid RFC 1123 label, or None if it is."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return f"{name!r} must be no more than 63 characters"
    if not _LABEL.match(name):
        return (f"{name!r} must consist of lower case alphanumeric characters or '-', and must "
                "start and end with an alphanumeric character")
    return None
