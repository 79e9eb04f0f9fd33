"""The API's refusals: an exception every route module raises, answered with SPEC §6's body,
and that body's place in the OpenAPI document (every status a route can answer is declared)."""

from typing import Any

from pydantic import BaseModel, ConfigDict


class ApiError(Exception):
    """An error answered with the SPEC's body."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers  # e.g. Retry-After with a 429


def not_found(what: str = "message") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of every refusal."""
    return {"error": {"code": code, "message": message}}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str


class ErrorBody(BaseModel):
    """`{"error": {"code", "message"}}`, the body of every refusal."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


_WHY = {
    400: "A request the API understood and refuses (a bad cursor, key or multipart body, a "
         "size over uploads.max_bytes)",
    401: "No API key, or not a valid one",
    403: "Not this agent's to reach",
    404: "Not found, or not addressed to this agent",
    409: "Not in a state to do that (yet)",
    413: "The request body (or the message it would send) is over the limit",
    422: "A parameter or JSON body that does not match this document",
    429: "Over a rate limit; `Retry-After` says when to try again",
    503: "The database or the object store is unavailable; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of refusals with the error body, for a route's
    `responses=` (a 422 declared here replaces FastAPI's own validation-error schema)."""
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in statuses}


def authed(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The refusals of a route that takes an API key (which needs the database): 401 and 503,
    plus `statuses`."""
    return error_responses(401, *statuses, 503)


# Any request, whatever its route, may carry a body over http.max_body (api/bodylimit.py): every
# router declares the 413 its routes may answer.
ANY_BODY = error_responses(413)
