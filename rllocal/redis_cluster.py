"""A Redis Cluster on loopback, from the same redis-server binary as the one-Redis runs: masters
(and optionally a replica each) on free ports, formed with CLUSTER commands and waited on until
every node says `cluster_state:ok`. Shared by the end-to-end tests, the benchmarks and the demo."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from .processes import answers_ping, forget_data, free_port, poll_until, redis_argv, redis_server_binary

SLOTS = 16384
# ADDSLOTS takes slots one by one (Redis 6.2 has no ADDSLOTSRANGE): this many a command.
_SLOTS_A_CALL = 2048
FORM_TIMEOUT_S = 30.0


def _command(client: redis.Redis, *args: Any) -> Any:
    # redis-py leaves execute_command unannotated.
    execute: Callable[..., Any] = client.execute_command
    return execute(*args)


# A node also listens on its port + 10000 (the cluster bus).
_BUS_OFFSET = 10000


def _free_pair() -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(200):
        port = free_port()
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    argv: list[str] | None = None

    def start(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self) -> dict[str, str]:
        text = _command(self.client(), "CLUSTER", "INFO")
        text = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def stop(self) -> None:
        """SIGKILL: the node loses what it had not written to its append-only file yet."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def restart(self, empty: bool = False) -> None:
        """Kills it if it runs, then starts it again on its port and data directory, with its cluster
        configuration file (so it comes back as the same node, with its slots); `empty` deletes its data
        first, as a node without persistence comes back."""
        assert self.argv is not None, "a node is restarted only after it was started"
        self.stop()
        if empty:
            forget_data(self.workdir)
        self.start(self.argv)
        poll_until(lambda: LocalCluster.pings(self), FORM_TIMEOUT_S, what=f"node {self.port} to answer again")

    def role(self) -> str:
        """The replication role the node reports now, `master` or `slave`; empty while it does not answer."""
        try:
            return str(self.client().info("replication").get("role", ""))
        except redis.RedisError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: the node neither reads nor writes, as behind a stalled link, until resume()."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class NodeSettings:
    """What every node of a LocalCluster runs with. `appendfsync` None keeps nothing on disk (as
    redis_argv). `min_replicas_to_write` > 0 makes a master refuse writes while fewer replicas than
    that have acknowledged its stream within `min_replicas_max_lag_s` seconds."""

    node_timeout_ms: int = 2000
    appendfsync: str | None = None
    min_replicas_to_write: int = 0
    min_replicas_max_lag_s: int = 10


def _cluster_argv(binary: str, node: ClusterNode, settings: NodeSettings) -> list[str]:
    replicas_to_write = [
        *("--min-replicas-to-write", str(settings.min_replicas_to_write)),
        *("--min-replicas-max-lag", str(settings.min_replicas_max_lag_s)),
    ]
    return [
        *redis_argv(binary, node.port, node.workdir, settings.appendfsync),
        *(replicas_to_write if settings.min_replicas_to_write else []),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        f"nodes-{node.port}.conf",
        "--cluster-node-timeout",
        str(settings.node_timeout_ms),
        # The models of a shard that is down answer UNAVAILABLE; the others keep serving.
        "--cluster-require-full-coverage",
        "no",
    ]


class LocalCluster:
    """`masters` masters splitting the slots evenly; `replicas` True gives each master a replica
    (failover). `settings.node_timeout_ms` is how long a master may be unreachable before its
    replica is promoted."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: bool = False, settings: NodeSettings | None = None
    ) -> None:
        self.workdir = workdir
        self.settings = settings or NodeSettings()
        self.masters = [self._node() for _ in range(masters)]
        self.replicas = [self._node() for _ in range(masters)] if replicas else []

    def _node(self) -> ClusterNode:
        port = _free_pair()
        folder = self.workdir / f"node-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        return ClusterNode(port, folder)

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.masters + self.replicas

    @property
    def url(self) -> str:
        """One node: the cluster client finds the others from it."""
        return f"redis://127.0.0.1:{self.masters[0].port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        for node in self.nodes:
            node.start(_cluster_argv(binary, node, self.settings))
        try:
            for node in self.nodes:
                poll_until(lambda node=node: self.pings(node), FORM_TIMEOUT_S, what=f"node {node.port} to answer")  # type: ignore[misc]
                node.node_id = str(_command(node.client(), "CLUSTER", "MYID"), "utf-8")
            self._form()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def pings(node: ClusterNode) -> bool:
        return answers_ping(node.proc, node.client(), f"redis-server on port {node.port}")

    def _form(self) -> None:
        first = self.masters[0]
        for node in self.nodes[1:]:
            _command(node.client(), "CLUSTER", "MEET", "127.0.0.1", first.port)
        share = SLOTS // len(self.masters)
        for i, master in enumerate(self.masters):
            end = SLOTS if i == len(self.masters) - 1 else (i + 1) * share
            for start in range(i * share, end, _SLOTS_A_CALL):
                _command(master.client(), "CLUSTER", "ADDSLOTS", *range(start, min(start + _SLOTS_A_CALL, end)))
        total = len(self.nodes)
        poll_until(
            lambda: all(int(n.info().get("cluster_known_nodes", 0)) == total for n in self.nodes),
            FORM_TIMEOUT_S,
            what="every node to know the others",
        )
        for master, replica in zip(self.masters, self.replicas, strict=False):
            _command(replica.client(), "CLUSTER", "REPLICATE", master.node_id)
        self.wait_ok()
        if self.replicas:
            poll_until(self._replicas_in_sync, FORM_TIMEOUT_S, what="every replica to sync with its master")

    def _replicas_in_sync(self) -> bool:
        for replica in self.replicas:
            info = replica.client().info("replication")
            if info.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self, timeout: float = FORM_TIMEOUT_S) -> None:
        """Until every running node says the cluster is ok (all slots served)."""

        def ok() -> bool:
            try:
                return all(n.info().get("cluster_state") == "ok" for n in self.nodes if n.alive())
            except redis.RedisError:
                return False

        poll_until(ok, timeout, interval=0.05, what="cluster_state:ok on every node")

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.masters[0].port, socket_timeout=5)

    def flush(self) -> None:
        """Empties every master (the replicas follow)."""
        for node in self.nodes:
            if node.alive() and node.client().info("replication").get("role") == "master":
                node.client().flushall()

    def master_of(self, key: str) -> ClusterNode:
        """The node serving a key's slot now."""
        client = self.client()
        try:
            node = cast(Callable[[str], Any], client.get_node_from_key)(key)
        finally:
            client.close()
        assert node is not None
        return next(n for n in self.nodes if n.port == node.port)

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """The replica a master was given when the cluster formed."""
        return self.replicas[self.masters.index(master)]

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.stop()


def slot_of(key: str) -> int:
    """The cluster slot of a key (by its hash tag when it has one)."""
    return int(key_slot(key.encode()))
