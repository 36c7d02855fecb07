"""Typed errors a client can cause; each class carries the HTTP status the API answers it with."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar


@dataclass
class FieldProblem:
    """One bad field: where it is (`location`, e.g. ``["body", "cronExpression"]``) and what is wrong."""

    location: list[str | int]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": ".".join(str(part) for part in self.location), "message": self.message}


@dataclass
class SundialError(Exception):
    """Base of every error a client can cause; `code` is the stable machine-readable name."""

    status: ClassVar[HTTPStatus]
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    code: str = "error"

    def __str__(self) -> str:
        return self.message


class BadRequestError(SundialError):
    """Malformed or contradictory input (400)."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, details or [], "bad_request")


class ValidationFailedError(SundialError):
    """One or more fields are invalid (422); `details` has one entry per bad field."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, problems: list[FieldProblem]) -> None:
        summary = "; ".join(f"{p.as_dict()['field']}: {p.message}" for p in problems)
        super().__init__(f"Invalid request: {summary}", [p.as_dict() for p in problems], "validation_failed")


class UnauthorizedError(SundialError):
    """No or invalid credentials (401)."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str = "Missing or invalid bearer token") -> None:
        super().__init__(message, [], "unauthorized")


class ForbiddenError(SundialError):
    """Authenticated but not allowed (403)."""

    status = HTTPStatus.FORBIDDEN

    def __init__(self, message: str = "Forbidden") -> None:
        super().__init__(message, [], "forbidden")


class NotFoundError(SundialError):
    """Unknown resource (404)."""

    status = HTTPStatus.NOT_FOUND

    def __init__(self, message: str) -> None:
        super().__init__(message, [], "not_found")


class ConflictError(SundialError):
    """The request conflicts with the resource's current state (409)."""

    status = HTTPStatus.CONFLICT

    def __init__(self, message: str) -> None:
        super().__init__(message, [], "conflict")


class PayloadTooLargeError(SundialError):
    """Request body over the size limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, message: str) -> None:
        super().__init__(message, [{"field": "body", "message": message}], "payload_too_large")


class UnsupportedMediaTypeError(SundialError):
    """Request body in a media type other than JSON (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE

    def __init__(self, message: str) -> None:
        super().__init__(message, [{"field": "body", "message": message}], "unsupported_media_type")


class ServiceUnavailableError(SundialError):
    """A service Sundial depends on did not answer; the request may be repeated (503)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message, [], "unavailable")


class ScheduleError(ValueError):
    """A cron expression, time zone or instant that cannot be scheduled; `field` names the culprit."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message
