"""One exception tree for every failure a client can see; rendered once per dialect at the edge."""

from __future__ import annotations


class ModelyardError(Exception):
    """A failure with everything a dialect needs to render it.

    `type` and `code` follow OpenAI's vocabulary; other dialects map them onto their own.
    """

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    upstream_status: int | None = None  # the HTTP status an upstream answered, when it is the upstream's failure

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))


class InvalidRequest(ModelyardError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(ModelyardError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ModelyardError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFound(ModelyardError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, *, param: str | None = "model") -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param=param)


class MethodNotAllowed(ModelyardError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ModelyardError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ModelyardError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit"


class InsufficientBalance(ModelyardError):
    """The org's wallet cannot cover the call's estimated price (the studio API's 402; OpenAI's insufficient_quota)."""

    status = 402
    type = "insufficient_quota"
    code = "insufficient_balance"


class UpstreamError(ModelyardError):
    """The provider or runtime behind a deployment failed (connect error, timeout, 5xx)."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class Overloaded(ModelyardError):
    """Capacity is exhausted for now; the client should retry later."""

    status = 503
    type = "api_error"
    code = "overloaded"


class ShuttingDown(ModelyardError):
    """The server is draining for shutdown: a stream still open at the end of the grace period is cut with this."""

    status = 503
    type = "api_error"
    code = "server_shutting_down"


class InternalError(ModelyardError):
    status = 500
    type = "api_error"
    code = "internal_error"
