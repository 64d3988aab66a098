"""OpenAI-style errors and the outcomes the gateway counts.

Every refusal the gateway makes is the JSON error body OpenAI's API returns (`error.message`,
`type`, `param`, `code`), so OpenAI client libraries surface it (and retry 429 and 503 on their
own, honouring `Retry-After`). Each request ends in exactly one `Outcome`, a fixed set so the
`outcome` label of the requests counter stays bounded whatever clients send.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

from aiohttp import web


class Outcome(enum.StrEnum):
    OK = "ok"
    """Proxied; the engine's own status (even a 4xx) is passed through."""
    BAD_REQUEST = "bad_request"
    MODEL_NOT_FOUND = "model_not_found"
    BODY_TOO_LARGE = "body_too_large"
    HOLD_FULL = "hold_full"
    HOLD_TIMEOUT = "hold_timeout"
    DRAINING = "draining"
    OVERLOADED = "overloaded"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_CLOSED = "upstream_closed"
    CLIENT_CLOSED = "client_closed"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"


class GatewayError(Exception):
    """A refusal: becomes the OpenAI-style error response and one outcome."""

    def __init__(
        self,
        status: int,
        message: str,
        outcome: Outcome,
        *,
        kind: str,
        code: str,
        param: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.kind = kind
        self.code = code
        self.param = param
        self.retry_after_seconds = retry_after_seconds

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        all_headers = dict(headers or {})
        if self.retry_after_seconds is not None:
            all_headers["Retry-After"] = str(self.retry_after_seconds)
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
            headers=all_headers,
        )

    def sse_event(self) -> bytes:
        """The error as a server-sent event, for a stream whose headers already went out."""
        return f"data: {json.dumps(self.body())}\n\n".encode()


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        400,
        message,
        Outcome.BAD_REQUEST,
        kind="invalid_request_error",
        code="invalid_request",
        param=param,
    )


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or is not served by this gateway.",
        Outcome.MODEL_NOT_FOUND,
        kind="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def body_too_large(limit_bytes: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than {limit_bytes} bytes.",
        Outcome.BODY_TOO_LARGE,
        kind="invalid_request_error",
        code="request_too_large",
    )


def hold_full(what: str, retry_after_seconds: int) -> GatewayError:
    return GatewayError(
        429,
        f"Too many requests are waiting for {what}; retry later.",
        Outcome.HOLD_FULL,
        kind="rate_limit_error",
        code="too_many_held_requests",
        retry_after_seconds=retry_after_seconds,
    )


def hold_timeout(model: str, waited_seconds: float, retry_after_seconds: int) -> GatewayError:
    return GatewayError(
        503,
        f"No replica of `{model}` became ready within {waited_seconds:.0f} s; retry later.",
        Outcome.HOLD_TIMEOUT,
        kind="server_error",
        code="model_unavailable",
        retry_after_seconds=retry_after_seconds,
    )


def draining() -> GatewayError:
    return GatewayError(
        503,
        "The gateway is shutting down; retry.",
        Outcome.DRAINING,
        kind="server_error",
        code="gateway_draining",
        retry_after_seconds=1,
    )


def overloaded(limit: int) -> GatewayError:
    return GatewayError(
        503,
        f"The gateway already serves {limit} requests; retry.",
        Outcome.OVERLOADED,
        kind="server_error",
        code="gateway_overloaded",
        retry_after_seconds=1,
    )


def upstream_unavailable(model: str, detail: str) -> GatewayError:
    return GatewayError(
        503,
        f"No replica of `{model}` could take the request ({detail}); retry.",
        Outcome.UPSTREAM_UNAVAILABLE,
        kind="server_error",
        code="model_unavailable",
        retry_after_seconds=1,
    )


def upstream_closed(model: str) -> GatewayError:
    return GatewayError(
        502,
        f"The replica of `{model}` serving this request closed the connection before the end.",
        Outcome.UPSTREAM_CLOSED,
        kind="server_error",
        code="upstream_closed",
    )


def unauthorized() -> GatewayError:
    return GatewayError(
        401,
        "Incorrect or revoked API key provided. Send it as `Authorization: Bearer <key>`.",
        Outcome.UNAUTHORIZED,
        kind="invalid_request_error",
        code="invalid_api_key",
    )


def rate_limited(limit: str, message: str, retry_after_seconds: int) -> GatewayError:
    return GatewayError(
        429,
        message,
        Outcome.RATE_LIMITED,
        kind="requests" if limit != "tokens" else "tokens",
        code="rate_limit_exceeded",
        retry_after_seconds=retry_after_seconds,
    )
