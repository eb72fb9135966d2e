"""Label and field selectors, parsed and matched as the Kubernetes API server does. No I/O.

Label selectors (`?labelSelector=`, `kubectl -l`, a Service's `spec.selector`, a Deployment's
`spec.selector`) support equality (`k=v`, `k==v`, `k!=v`), existence (`k`, `!k`), sets
(`k in (a,b)`, `k notin (a,b)`) and the numeric `k>5` / `k<5`. The text is tokenised the way
apimachinery's lexer does it, so commas inside parentheses belong to the set and stray words are
reported instead of being silently glued together.

Field selectors (`?fieldSelector=`) are conjunctions of `path=value`, `path==value` and
`path!=value` over an allow-list of dotted paths per resource.

Both raise `SelectorError` (a `ValueError`) whose message is fit for a 400 BadRequest.
The label key/value checks are shared with `podnet.validation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "label_key_errors",
    "label_value_errors",
]


class SelectorError(ValueError):
    """A selector that cannot be parsed or is semantically invalid (answered as 400)."""


# --- label key / value syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue) ---

# Used with fullmatch: `$` would also accept a trailing newline.
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def label_key_errors(key: Any) -> list[str]:
    """Why `key` is not a valid label key (a Kubernetes qualified name); empty when valid."""
    if not isinstance(key, str):
        return ["label keys must be strings"]
    prefix, slash, name = key.rpartition("/")
    if not slash:
        prefix, name = "", key
    errors: list[str] = []
    if slash:
        if not prefix:
            errors.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errors.append("prefix part must be no more than 253 characters")
        elif not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            errors.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _NAME_PART.fullmatch(name):
        errors.append(_NAME_PART_MSG)
    return errors


def label_value_errors(value: Any) -> list[str]:
    """Why `value` is not a valid label value; empty when valid ("" is valid)."""
    if not isinstance(value, str):
        return ["label values must be strings"]
    if value == "":
        return []
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _NAME_PART.fullmatch(value):
        return [_LABEL_VALUE_MSG]
    return []


# --- label selectors -------------------------------------------------------------------------

# Operators, spelled as in the text form except the set/existence ones.
EXISTS, DOES_NOT_EXIST = "exists", "!"
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, GT, LT = "in", "notin", "gt", "lt"

_SPEC_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector. `values` is sorted (it is a set)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        op = self.operator
        if op == EXISTS:
            return present
        if op == DOES_NOT_EXIST:
            return not present
        if op in (EQUALS, DOUBLE_EQUALS, IN):
            return present and value in self.values
        if op in (NOT_EQUALS, NOT_IN):
            # Kubernetes: `k!=v` and `k notin (...)` also match objects without the label.
            return not present or value not in self.values
        # gt / lt: both sides must be integers, otherwise the object simply does not match.
        try:
            have = int(str(value)) if present else None
        except ValueError:
            return False
        if have is None:
            return False
        bound = int(self.values[0])
        return have > bound if op == GT else have < bound

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
            return f"{self.key}{op}{self.values[0]}"
        if op in (GT, LT):
            return f"{self.key}{'>' if op == GT else '<'}{self.values[0]}"
        return f"{self.key} {op} ({','.join(self.values)})"


def _requirement(key: str, operator: str, values: Iterable[str]) -> Requirement:
    """Build a requirement, checking key/value syntax and operator arity like apimachinery."""
    problems = label_key_errors(key)
    if problems:
        raise SelectorError(f"invalid label key {key!r}: {'; '.join(problems)}")
    vals = tuple(sorted(set(values)))
    if operator in (IN, NOT_IN) and not vals:
        raise SelectorError(f"{key}: for 'in', 'notin' operators, values set can't be empty")
    if operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(vals) != 1:
        raise SelectorError(f"{key}: exact-match compatibility requires one single value")
    if operator in (EXISTS, DOES_NOT_EXIST) and vals:
        raise SelectorError(
            f"{key}: values set must be empty for exists and does not exist")
    if operator in (GT, LT):
        if len(vals) != 1:
            raise SelectorError(f"{key}: for 'Gt', 'Lt' operators, exactly one value is required")
        if not re.fullmatch(r"-?[0-9]+", vals[0]):
            raise SelectorError(
                f"{key}: for 'Gt', 'Lt' operators, the value must be an integer")
        return Requirement(key, operator, vals)
    for v in vals:
        problems = label_value_errors(v)
        if problems:
            raise SelectorError(f"invalid label value {v!r} for key {key!r}: {problems[0]}")
    return Requirement(key, operator, vals)


# Tokens of the label selector language (apimachinery's lexer has the same set).
_SPECIAL = "!=,()<>"
_T_ID, _T_END = "identifier", "end of string"


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Split into (kind, literal). Kinds: identifier, end, or the operator literal itself."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            two = text[i:i + 2]
            if two in ("!=", "=="):
                tokens.append((two, two))
                i += 2
            else:
                tokens.append((ch, ch))
                i += 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        # `in` / `notin` are keywords only where an operator is expected; the parser decides.
        tokens.append((_T_ID, word))
        i = j
    tokens.append((_T_END, ""))
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        if tok[0] != _T_END:
            self.pos += 1
        return tok

    @staticmethod
    def fail(found: tuple[str, str], expected: str) -> SelectorError:
        shown = found[1] if found[0] != _T_END else ""
        return SelectorError(
            f"unable to parse requirement: found '{shown}', expected: {expected}")

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        if self.peek()[0] == _T_END:
            return reqs
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok[0] == _T_END:
                return reqs
            if tok[0] != ",":
                raise self.fail(tok, "',' or 'end of string'")
            if self.peek()[0] == _T_END:
                raise self.fail(self.peek(), "identifier after ','")

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok[0] == "!":
            key = self.take()
            if key[0] != _T_ID:
                raise self.fail(key, "identifier after '!'")
            return _requirement(key[1], DOES_NOT_EXIST, ())
        if tok[0] != _T_ID:
            raise self.fail(tok, "'!' or identifier")
        name = tok[1]
        op = self.peek()
        if op[0] in (",", _T_END):
            return _requirement(name, EXISTS, ())
        self.take()
        if op[0] in ("=", "==", "!="):
            val = self.peek()
            if val[0] == _T_ID:
                self.take()
                return _requirement(name, op[0], (val[1],))
            if val[0] in (",", _T_END):
                return _requirement(name, op[0], ("",))  # `k=` means "value is empty"
            raise self.fail(val, "identifier")
        if op[0] in (">", "<"):
            val = self.take()
            if val[0] != _T_ID:
                raise self.fail(val, "integer")
            return _requirement(name, GT if op[0] == ">" else LT, (val[1],))
        if op[0] == _T_ID and op[1] in (IN, NOT_IN):
            return _requirement(name, op[1], self.values())
        raise self.fail(op, "'=', '!=', '==', 'in', 'notin', '>', '<', ',' or 'end of string'")

    def values(self) -> list[str]:
        tok = self.take()
        if tok[0] != "(":
            raise self.fail(tok, "'('")
        vals: list[str] = []
        expect_value = True
        while True:
            tok = self.take()
            if tok[0] == ")":
                if expect_value:
                    vals.append("")  # `in ()` and `in (a,)` carry an empty value
                return vals
            if tok[0] == ",":
                if expect_value:
                    vals.append("")
                expect_value = True
                continue
            if tok[0] == _T_ID and expect_value:
                vals.append(tok[1])
                expect_value = False
                continue
            raise self.fail(tok, "',', ')' or identifier")


class LabelSelector:
    """A conjunction of label requirements. The empty selector matches everything."""

    def __init__(self, requirements: Iterable[Requirement] = ()) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(requirements)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse `kubectl -l` / `?labelSelector=` text, e.g. "a=b,c!=d,e in (x,y),!f,g"."""
        if not isinstance(text, str):
            raise SelectorError("label selector must be a string")
        return cls(_LabelParser(text).parse())

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LabelSelector:
        """A Kubernetes LabelSelector object: {"matchLabels": {..}, "matchExpressions": [..]}."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise SelectorError("label selector must be an object")
        reqs: list[Requirement] = []
        match_labels = spec.get("matchLabels") or {}
        if not isinstance(match_labels, Mapping):
            raise SelectorError("matchLabels must be a map of strings")
        for key, value in match_labels.items():
            if not isinstance(value, str):
                raise SelectorError(f"matchLabels[{key}] must be a string")
            reqs.append(_requirement(key, EQUALS, (value,)))
        exprs = spec.get("matchExpressions") or []
        if not isinstance(exprs, list):
            raise SelectorError("matchExpressions must be a list")
        for i, expr in enumerate(exprs):
            if not isinstance(expr, Mapping):
                raise SelectorError(f"matchExpressions[{i}] must be an object")
            op_name = expr.get("operator")
            if op_name not in _SPEC_OPERATORS:
                raise SelectorError(
                    f"matchExpressions[{i}].operator: {op_name!r} is not a valid label "
                    "selector operator (In, NotIn, Exists, DoesNotExist)")
            key = expr.get("key")
            values = expr.get("values") or []
            if not isinstance(key, str):
                raise SelectorError(f"matchExpressions[{i}].key must be a string")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise SelectorError(f"matchExpressions[{i}].values must be a list of strings")
            reqs.append(_requirement(key, _SPEC_OPERATORS[op_name], values))
        return cls(reqs)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels if isinstance(labels, Mapping) else {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        # Canonical: sorted by key (then operator) like apimachinery's internalSelector.
        ordered = sorted(self.requirements, key=lambda r: (r.key, r.operator, r.values))
        return ",".join(str(r) for r in ordered)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSelector) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


# --- field selectors -------------------------------------------------------------------------

# Fields whose Kubernetes field-set value is not "" when absent: the API server formats the
# Go zero value (a bool prints as "false").
_ABSENT_AS = {"spec.unschedulable": "false"}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    operator: str  # "=" or "!=" ("==" is normalised to "=")
    value: str

    def __str__(self) -> str:
        escaped = (self.value.replace("\\", "\\\\").replace(",", "\\,")
                   .replace("=", "\\="))
        return f"{self.path}{self.operator}{escaped}"


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector value {value!r}: bad escape")
            out.append(value[i + 1])
            i += 2
            continue
        if ch in ",=":
            raise SelectorError(f"invalid field selector value {value!r}: "
                                f"unescaped {ch!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def _field_value(obj: Any, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _ABSENT_AS.get(path, "")
        cur = cur[part]
    if cur is None:
        return _ABSENT_AS.get(path, "")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, (str, int, float)):
        return str(cur)
    return ""  # maps and lists are not selectable; compare as absent


class FieldSelector:
    """A conjunction of field requirements over dotted paths."""

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)

    @classmethod
    def parse(cls, text: str, allowed: Iterable[str]) -> FieldSelector:
        """Parse `?fieldSelector=` text; paths outside `allowed` are rejected."""
        if not isinstance(text, str):
            raise SelectorError("field selector must be a string")
        allowed_set = set(allowed)
        reqs: list[FieldRequirement] = []
        for term in _split_unescaped(text, ","):
            if not term.strip():
                continue
            for op in ("!=", "==", "="):
                idx = _find_unescaped(term, op)
                if idx >= 0:
                    path = term[:idx].strip()
                    raw = term[idx + len(op):].strip()
                    break
            else:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
            if not path:
                raise SelectorError(f"invalid selector: '{text}'; field path is empty")
            if path not in allowed_set:
                raise SelectorError(f"field label not supported: {path}")
            reqs.append(FieldRequirement(path, "!=" if op == "!=" else "=", _unescape(raw)))
        return cls(reqs)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for r in self.requirements:
            equal = _field_value(obj, r.path) == r.value
            if equal != (r.operator == "="):
                return False
        return True

    def value_for(self, path: str) -> str | None:
        """The value required by a `path=value` term, if any (lets the store use an index)."""
        for r in self.requirements:
            if r.path == path and r.operator == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"


def _find_unescaped(term: str, op: str) -> int:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        if term.startswith(op, i):
            return i
        i += 1
    return -1
