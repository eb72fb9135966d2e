"""Command-line flags as Go programs take them (`-text=hi`, `--port 9376`, `--tcp`).

Go's `flag` and cobra's `pflag` both accept `-name`/`--name` with `=value` or the value as
the next word; a boolean flag takes only `=value` (`--http=false`), since the next word may
be a positional argument.
"""

from __future__ import annotations

from collections.abc import Mapping

FlagValue = bool | int | str


class FlagError(ValueError):
    """A flag the program does not know or a value it cannot take (the program exits 1/2)."""


_TRUE = {"1", "t", "true", "TRUE", "True"}
_FALSE = {"0", "f", "false", "FALSE", "False"}


def _convert(name: str, default: FlagValue, text: str) -> FlagValue:
    if isinstance(default, bool):
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise FlagError(f'invalid argument "{text}" for "--{name}" flag: '
                        f'strconv.ParseBool: parsing "{text}": invalid syntax')
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise FlagError(f'invalid argument "{text}" for "--{name}" flag: '
                            f'strconv.ParseInt: parsing "{text}": invalid syntax') from None
    return text


def parse_flags(argv: list[str], defaults: Mapping[str, FlagValue],
                ) -> tuple[dict[str, FlagValue], list[str]]:
    """(flag values, positional arguments) of argv (without the program name)."""
    values: dict[str, FlagValue] = dict(defaults)
    positional: list[str] = []
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--":
            positional += words
            break
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        name, eq, text = word.lstrip("-").partition("=")
        if name not in defaults:
            raise FlagError(f"unknown flag: --{name}")
        default = defaults[name]
        if not eq:
            if isinstance(default, bool):
                values[name] = True
                continue
            if not words:
                raise FlagError(f"flag needs an argument: --{name}")
            text = words.pop(0)
        values[name] = _convert(name, default, text)
    return values, positional
