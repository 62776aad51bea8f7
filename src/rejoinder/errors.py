"""The exceptions for mistakes a user can make and fix: RejoinderError everywhere, and
ApiError, its HTTP answer, which both apps (serving and judging) raise."""


class RejoinderError(ValueError):
    """A problem with the user's input, named with the input and the fix.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


class ApiError(Exception):
    """An error answered to an HTTP client, in OpenAI's error shape (`error_body`)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(message: str, kind: str, status: int) -> dict:
    return {"error": {"message": message, "type": kind, "code": status}}
