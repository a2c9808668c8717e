"""rlservice: one instance of the distributed rate limiter."""
