"""Every error the API answers, mapped to HTTP in one place: the status comes from the error's class."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from api_gate import admit
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from sundial.domain.errors import BadRequestError, SundialError, UnsupportedMediaTypeError
from sundial.observability import logger


def error_response(
    status: HTTPStatus, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message, "details": details or []}},
    )


def domain_error(error: SundialError) -> Response[Any]:
    return error_response(error.status, error.code, error.message, error.details)


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as a `details` entry: `field` is where it is (`body.maxRetries`, `query.limit`)."""
    location = ".".join(str(part) for part in error.get("loc", ())) or "body"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return {"field": location, "message": message}


def register(app: APIGatewayHttpResolver) -> None:
    """Install the handlers. Those for errors raised before the middleware ran put the gate first."""

    def refusal() -> Response[Any] | None:
        """The gate's answer to a request that failed before its route ran; None when the gate lets it pass."""
        try:
            admit(app)
        except SundialError as refused:
            return domain_error(refused)
        return None

    @app.exception_handler(SundialError)
    def handle_domain_error(error: SundialError) -> Response[Any]:
        return domain_error(error)

    @app.exception_handler(RequestValidationError)
    def handle_validation_error(error: RequestValidationError) -> Response[Any]:
        """After the gate: 400 when the body is not a JSON object at all, else 422 naming each bad field."""
        refused = refusal()
        if refused is not None:
            return refused
        problems = list(error.errors())
        for problem in problems:
            if problem.get("type") == "json_invalid":
                reason = str((problem.get("ctx") or {}).get("error", "malformed"))
                message = f"Request body is not valid JSON: {reason}"
                return domain_error(BadRequestError(message, [{"field": "body", "message": reason}]))
        for problem in problems:
            if tuple(problem.get("loc", ())) == ("body",):
                missing = problem.get("type") == "missing"
                message = "is required" if missing else "must be a JSON object"
                return domain_error(BadRequestError(f"Request body {message}", [{"field": "body", "message": message}]))
        details = [_problem(problem) for problem in problems]
        summary = "; ".join(f"{detail['field']}: {detail['message']}" for detail in details)
        return error_response(
            HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed", f"Invalid request: {summary}", details
        )

    @app.exception_handler(RequestUnsupportedContentType)
    def handle_unsupported_content_type(_error: RequestUnsupportedContentType) -> Response[Any]:
        """Reached only when the gate let the media type pass, i.e. for a declared type with an empty body."""
        return refusal() or domain_error(
            UnsupportedMediaTypeError(f"Request body must be {content_types.APPLICATION_JSON}")
        )

    @app.exception_handler(UnicodeDecodeError)
    def handle_undecodable_body(_error: UnicodeDecodeError) -> Response[Any]:
        """A base64-encoded body that is not UTF-8 text fails while the resolver decodes it."""
        return refusal() or domain_error(
            BadRequestError("Request body is not UTF-8 text", [{"field": "body", "message": "is not UTF-8"}])
        )

    @app.not_found
    def not_found(_error: Exception) -> Response[Any]:
        return error_response(HTTPStatus.NOT_FOUND, "not_found", "No such route")

    @app.exception_handler(Exception)
    def handle_unexpected(_error: Exception) -> Response[Any]:
        """A bug, never a client's doing: logged with its traceback, answered in the standard shape."""
        logger.exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Internal error")
