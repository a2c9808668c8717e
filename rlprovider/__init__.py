"""rlprovider: a local stand-in for LLM providers' HTTP APIs (OpenAI chat completions, Anthropic
messages) that enforces per-key limits the way the providers document them."""
