"""Image references as a container runtime reads them: `[registry/]path[:tag][@digest]`.

`nginx`, `nginx:1.25`, `docker.io/library/nginx:latest`, `registry.k8s.io/pause:3.9` and
`busybox@sha256:<64 hex>` all parse; the registry decides nothing here (podnet pulls nothing),
so a reference is matched by its repository path alone. The grammar follows the distribution
reference rules: lowercase path components of `[a-z0-9]` joined by `.`, `_`, `__` or dashes,
a tag of up to 128 `[A-Za-z0-9_.-]` characters not starting with `.` or `-`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_REGISTRY_RE = re.compile(r"(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::\d+)?")


class BadReference(ValueError):
    """Not an image reference (kubelet's InvalidImageName)."""


@dataclass(frozen=True)
class ImageRef:
    registry: str   # "docker.io" when none was given
    path: str       # "library/nginx", "e2e-test-images/agnhost", "podnet/echo"
    tag: str        # "" when none was given (then "latest" is meant, unless a digest is)
    digest: str     # "" or "sha256:..."

    @property
    def name(self) -> str:
        """The last path component: `agnhost` for `registry.k8s.io/e2e-test-images/agnhost`."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def short_path(self) -> str:
        """The path as people write it for Docker Hub's official images (`nginx`)."""
        return self.path.removeprefix("library/") if self.registry == DOCKER_HUB else self.path


def _is_registry(first: str) -> bool:
    # Like Docker: the first component names a registry when it has a dot or a port, or is
    # localhost; otherwise the reference is on Docker Hub (`traefik/whoami`).
    return ("." in first or ":" in first or first == "localhost") and bool(
        _REGISTRY_RE.fullmatch(first))


def parse_reference(text: str) -> ImageRef:
    """Parse an image reference; raises BadReference with Docker's wording for garbage."""
    if not text or text != text.strip():
        raise BadReference("invalid reference format")
    rest, at, digest = text.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise BadReference("invalid reference format: bad digest")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = ""
    if colon > slash:       # a colon after the last slash starts the tag (not a port)
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise BadReference("invalid reference format: bad tag")
    parts = rest.split("/")
    registry = DOCKER_HUB
    if len(parts) > 1 and _is_registry(parts[0]):
        registry = parts.pop(0)
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    if not parts or not all(parts):
        raise BadReference("invalid reference format")
    for part in parts:
        if not _COMPONENT_RE.fullmatch(part):
            if part.lower() != part:
                raise BadReference("invalid reference format: repository name must be lowercase")
            raise BadReference("invalid reference format")
    if registry == DOCKER_HUB and len(parts) == 1:
        parts.insert(0, "library")      # `nginx` is `docker.io/library/nginx`
    return ImageRef(registry=registry, path="/".join(parts), tag=tag, digest=digest)
