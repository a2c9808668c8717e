"""Generated from protos/ratelimit/v1/ratelimit.proto by scripts/gen_protos.py."""
