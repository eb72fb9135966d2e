"""API errors as Kubernetes `Status` objects.

Handlers raise `ApiError`; the API server turns it into a `Status` body with the matching
HTTP code, which kubectl prints as `Error from server (<reason>): <message>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One invalid field, as in a 422 `Status.details.causes[]` entry.

    `type` is Kubernetes' wording: "Required value", "Invalid value", "Unsupported value",
    "Duplicate value", "Forbidden", "Too long", "Not found".
    """

    path: str            # "spec.containers[0].image"
    type: str
    detail: str = ""
    value: Any = None

    # Kubernetes' machine-readable cause reasons, by error type.
    _REASONS = {
        "Required value": "FieldValueRequired",
        "Invalid value": "FieldValueInvalid",
        "Unsupported value": "FieldValueNotSupported",
        "Duplicate value": "FieldValueDuplicate",
        "Forbidden": "FieldValueForbidden",
        "Too long": "FieldValueTooLong",
        "Not found": "FieldValueNotFound",
    }

    @property
    def reason(self) -> str:
        return self._REASONS.get(self.type, "FieldValueInvalid")

    def body(self) -> str:
        """The error without its path (Kubernetes' ErrorBody): `Invalid value: "v": detail`."""
        if self.type in ("Invalid value", "Unsupported value", "Duplicate value"):
            text = f"{self.type}: {_quote(self.value)}"
        else:
            text = self.type
        return f"{text}: {self.detail}" if self.detail else text

    def message(self) -> str:
        """The text Kubernetes prints: `spec.x: Invalid value: "v": detail`."""
        return f"{self.path}: {self.body()}"


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if value is None:
        return "null"
    return str(value)


@dataclass
class ApiError(Exception):
    """An error answered as a `Status` object."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(404, "NotFound", f'{plural} "{name}" not found', details)


def already_exists(plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists',
                    {"name": name, "kind": plural})


def conflict(plural: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": {why}',
                    {"name": name, "kind": plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 with one cause per field, worded like the real API server."""
    joined = ", ".join(e.message() for e in errors)
    if len(errors) > 1:
        joined = f"[{joined}]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {joined}',
        {
            "name": name,
            "kind": kind,
            "causes": [
                {"reason": e.reason, "message": e.body(), "field": e.path} for e in errors
            ],
        },
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format - accepted media types '
                    f'include: application/json-patch+json, application/merge-patch+json, '
                    f'application/apply-patch+yaml, application/strategic-merge-patch+json '
                    f'(got "{content_type}")')
