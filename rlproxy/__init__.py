"""rlproxy: a gRPC front for several rlservice instances that speaks the same RateLimiter API."""
