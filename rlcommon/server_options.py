"""The gRPC limits both servers (rlservice and rlproxy) run with, chosen for this API rather than left at
gRPC's defaults. docs/operations.md ("gRPC server limits") gives each value's reasons."""

from __future__ import annotations

from typing import Final

# The largest legitimate request is an Acquire naming 64 models (MAX_MODELS) of 128 characters each
# (MAX_NAME_LENGTH), a 256-character job id and job type, every character 4 bytes of UTF-8: 33 924
# bytes. A Release is at most 1 123. Twice the largest, so that anything beyond is garbage or an attack.
MAX_REQUEST_BYTES: Final = 64 * 1024
# The largest reply is a GetAllocation with 64 models and 64 job types (MAX_JOB_TYPES), names of 128
# four-byte characters, every number at its widest: 2 380 577 bytes. 4 MiB is what a gRPC client
# receives by default, so a reply the server sends is one every client can read.
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
# gRPC core holds the calls that arrive faster than the server's event loop picks them up (it takes them
# one at a time). Past 1000 of them (its default) it cancels new ones at random, and past 3000 all of
# them, with CANCELLED and no message, before the servicer sees them: a burst of 1500 WatchAllocation
# streams lost about 40 that way, and a burst of 3000 waiting Acquires about 600. With this room such a
# burst reaches the servicer, which answers each: past max_waiters or --max-watch-streams with
# RESOURCE_EXHAUSTED and why. docs/operations.md: what a client sees.
MAX_PENDING_CALLS: Final = 10_000
# Between the two limits gRPC cancels a growing share of new calls; from this one, every one.
MAX_PENDING_CALLS_HARD_LIMIT: Final = 20_000
# A waiting Acquire is an open stream, and a proxy reaches each instance over one connection: one
# connection may carry as many calls as the server would hold (HTTP/2's default is unlimited).
MAX_STREAMS_PER_CONNECTION: Final = MAX_PENDING_CALLS_HARD_LIMIT
# Clients may ping this often to keep a connection alive while a call waits (no data flows while an
# Acquire waits): gRPC's 5-minute default would GOAWAY a client pinging every minute.
MIN_CLIENT_PING_INTERVAL_MS: Final = 10_000
# The server pings a connection silent this long, and drops it when the answer is this late, so that
# the waiters of a client that vanished (a host gone, a cable pulled) give their places back.
KEEPALIVE_TIME_MS: Final = 60_000
KEEPALIVE_TIMEOUT_MS: Final = 20_000
# A connection with no call at all this long is closed (GOAWAY; the client reconnects when it needs to).
MAX_CONNECTION_IDLE_MS: Final = 10 * 60_000

SERVER_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_REPLY_BYTES),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS_HARD_LIMIT),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    # A client may keep its connection warm between calls: a proxy or a worker between jobs.
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC's default: the third ping too soon closes the connection with GOAWAY too_many_pings.
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # Without it the server stops pinging after two pings with no data, which a long wait is.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
    # No grpc.max_connection_age_ms: max_wait_ms and WatchAllocation streams have no upper bound, and
    # an age limit's grace would have to outlast the longest of them.
)
