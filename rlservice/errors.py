"""Domain errors, each with the gRPC status it maps to; the API layer turns them into statuses."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class Exhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class ModelUnavailable(Unavailable):
    """One model's ledger is unreachable while the others' may answer (a cluster's shard down)."""


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
