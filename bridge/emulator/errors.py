"""Error answers of the EG emulator: codes, messages and the error body (shared/eg-api.md §6).

Every error the emulator sends is an :class:`ApiError` turned into the documented body
``{"error_code", "error_msg", "error_details", "request_id"}`` by the app's middleware.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]

BAD_REQUEST = "EG.00014000"
"""Generic 400, also used for a body that is not JSON (eg-api §6)."""
INVALID_PARAMS = "EG.00513000"
NAME_DUPLICATED = "EG.00513001"
INVALID_CHANNEL = "EG.00513005"
QUOTA_EXCEEDED = "EG.00514003"
NOT_MODIFIABLE = "EG.00514004"
NOT_FOUND = "EG.00014040"
INTERNAL = "EG.00015000"
AUTH_FAILED = "APIGW.0301"
"""Gateway auth failure for tokens and AK/SK (eg-api §2.1, §6)."""
PAGE_PAST_END = "APIGW.0106"
"""List with a non-zero offset >= total (eg-api §3.4)."""
THROTTLED = "APIG.0308"
REQUEST_TOO_LARGE = "EG.00533007"
EVENT_TOO_LARGE = "EG.00533012"
TOO_MANY_EVENTS = "EG.00533013"

_STATUS_DEFAULTS: dict[int, tuple[str, str]] = {
    400: (BAD_REQUEST, "Bad request"),
    401: (AUTH_FAILED, "Incorrect IAM authentication information: injected fault"),
    403: ("EG.00014030", "No permissions to request this method"),
    404: (NOT_FOUND, "Not request resource found"),
    429: (THROTTLED, "The throttling threshold has been reached"),
    500: (INTERNAL, "Internal Server Error"),
}


def status_default(status: int) -> tuple[str, str]:
    """The ``(error_code, error_msg)`` the emulator sends for an HTTP status by default.

    Args:
        status: an HTTP status, 400..599.

    Returns the documented generic pair of eg-api.md §6 for 400/403/404/500, ``APIGW.0301``
    for 401 (§2.1), ``APIG.0308`` for 429 (§6, the APIG throttling code), ``EG.00015000``
    for every other 5xx (the only documented server code) and ``EG.0001<status>0`` (the
    pattern of the documented codes) for any other 4xx.
    """
    if status in _STATUS_DEFAULTS:
        return _STATUS_DEFAULTS[status]
    if status >= 500:
        return INTERNAL, f"Server error ({status})"
    return f"EG.0001{status}0", f"Request failed ({status})"


class ApiError(Exception):
    """An error answer: HTTP status plus an EG error body (shared/eg-api.md §6).

    Args:
        status: the HTTP status (400..599).
        error_code: e.g. ``EG.00513000`` or ``APIGW.0301``; always prefixed (design §9).
        error_msg: short text, at most 512 characters (eg-api §6).
        error_details: longer text, at most 1024 characters; defaults to ``error_msg``.
    """

    def __init__(
        self, status: int, error_code: str, error_msg: str, error_details: str = ""
    ) -> None:
        super().__init__(f"{status} {error_code}: {error_msg}")
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg[:512]
        self.error_details = (error_details or error_msg)[:1024]

    def body(self, request_id: str) -> JsonObject:
        """The JSON error body for the response with ``X-Request-Id`` ``request_id``."""
        return {
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "error_details": self.error_details,
            "request_id": request_id,
        }


def invalid_params(*problems: str) -> ApiError:
    """400 ``EG.00513000`` naming each bad field, e.g. ``"name: required"`` (eg-api §3.5)."""
    return ApiError(400, INVALID_PARAMS, "Invalid parameters: " + "; ".join(problems))


def not_found(what: str) -> ApiError:
    """404 ``EG.00014040`` for a missing project, channel, source or route (eg-api §3.5)."""
    return ApiError(404, NOT_FOUND, f"Not request resource found: {what}")


def bad_json(reason: str) -> ApiError:
    """400 ``EG.00014000`` for a request body that is not valid JSON."""
    return ApiError(400, BAD_REQUEST, "Bad request: the body is not valid JSON", reason)
