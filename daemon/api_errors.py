"""The API's refusals: an exception every route module raises, answered with SPEC §6's body."""


class ApiError(Exception):
    """An error answered with the SPEC's body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str = "message") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")
