"""Exceptions raised by the clients, one class per gRPC status the service uses."""

from __future__ import annotations

import grpc


class RateLimitError(Exception):
    """A call to the rate limiter failed. ``code`` is the gRPC status, ``message`` its details."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class CapacityExhausted(RateLimitError):
    """RESOURCE_EXHAUSTED: no model of the escalation order had capacity within its wait."""


class InvalidRequest(RateLimitError):
    """INVALID_ARGUMENT: unknown job type or model, empty job id, absurd usage."""


class LeaseNotFound(RateLimitError):
    """NOT_FOUND: the lease is unknown to the instance or has expired."""


class ServiceUnavailable(RateLimitError):
    """UNAVAILABLE: the instance cannot be reached or cannot reach its ledger."""


class DeadlineExceeded(RateLimitError):
    """DEADLINE_EXCEEDED: the caller's timeout ended the call."""


class Unauthenticated(RateLimitError):
    """UNAUTHENTICATED: the server wants a token (``token=``) and got none, or one it does not accept."""


_BY_CODE: dict[grpc.StatusCode, type[RateLimitError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: CapacityExhausted,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: LeaseNotFound,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def error_for(code: grpc.StatusCode, message: str) -> RateLimitError:
    return _BY_CODE.get(code, RateLimitError)(code, message)


def from_rpc_error(err: grpc.RpcError) -> RateLimitError:
    return error_for(err.code(), err.details() or "")
