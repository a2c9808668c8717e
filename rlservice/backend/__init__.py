"""The Redis ledger: Lua scripts and the thin async client that calls them."""
