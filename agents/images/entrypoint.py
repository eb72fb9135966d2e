"""What a container runs: the image's ENTRYPOINT/CMD merged with the pod's command/args.

Kubernetes' rules: `command` replaces the image's ENTRYPOINT (and then its CMD is dropped),
`args` replaces CMD. `$(VAR)` in command, args and env values expands from the container's
environment as kubelet does: a defined name is replaced, an undefined one is left as written,
and `$$` is a literal `$` (so `$$(VAR)` stays `$(VAR)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def expand(text: str, env: Mapping[str, str]) -> str:
    """kubelet's `$(VAR)` expansion of one string."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:     # no closing paren: the rest is literal
                out.append(text[i:])
                break
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def container_argv(entrypoint: Sequence[str], cmd: Sequence[str],
                   command: Sequence[str], args: Sequence[str]) -> list[str]:
    """The process a container starts (argv), from the image's defaults and the pod spec."""
    if command:
        return [*command, *args]
    return [*entrypoint, *(args if args else cmd)]
