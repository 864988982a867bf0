"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Everything the request layer refuses is an ``APIError``; the app turns it into a JSON response with ``status``.
"""
from __future__ import annotations

from typing import Optional


class APIError(Exception):
    """A refused request: HTTP ``status`` plus OpenAI's error fields (message, type, param, code)."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.status = int(status)
        self.message = str(message)
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        """The JSON body OpenAI's clients expect."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, type={self.type!r}, param={self.param!r}, code={self.code!r})"


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    """400 invalid_request_error."""
    return APIError(400, message, "invalid_request_error", param, code)


def unauthorized(message: str = "missing or invalid API key", param: Optional[str] = None,
                 code: Optional[str] = "invalid_api_key") -> APIError:
    """401 authentication_error."""
    return APIError(401, message, "authentication_error", param, code)


def too_large(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    """413 invalid_request_error (a body or a fetched media object over its byte limit)."""
    return APIError(413, message, "invalid_request_error", param, code)


def server_busy(message: str, param: Optional[str] = None, code: Optional[str] = "server_busy") -> APIError:
    """503 server_error: the server cannot take the request now (not the request's fault; retry later)."""
    return APIError(503, message, "server_error", param, code)
