"""A real Redis Cluster of local redis-server processes (3 masters + 3 replicas), started and stopped by the
tests and benchmarks that need one: `redis-server --cluster-enabled yes` per node, then
`redis-cli --cluster create ... --cluster-replicas 1`. Ports are free ones the OS hands out (below 55536: the
cluster bus listens on port + 10000), so several clusters (say, two test modules' and a benchmark's) coexist.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_TIMEOUT_MS = 1000  # how long a master may be silent before its replica takes over (production: 5000)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _node_ports(n: int) -> list[int]:
    """n free ports whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55536 and port not in ports and _port_free(port + 10000):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"could not find {n} free port pairs for a Redis Cluster")


@dataclass
class LocalCluster:
    folder: Path
    nodes: int = 6
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    @staticmethod
    def available() -> str | None:
        """Why a cluster cannot run here, or None."""
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                return f"{binary} is not installed"
        return None

    @property
    def url(self) -> str:
        """One seed node; clients learn the rest from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> LocalCluster:
        self.ports = _node_ports(self.nodes)
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            self._wait(lambda p=port: self._cli(p, "ping") == "PONG", f"node {port} did not start")
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr}")
        self._wait(self.healthy, "the cluster did not reach cluster_state:ok with 3 masters and 3 replicas", 60)
        return self

    def _start_node(self, port: int) -> None:
        node_dir = self.folder / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "no",
            # A replica whose link to its master was down a while (a full resync after the bootstrap's bulk
            # writes) would otherwise judge its data too old (node timeout x 10) and never stand for election.
            "--cluster-replica-validity-factor", "0",
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _cli(self, port: int, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()

    def _wait(self, condition, message: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.1)

    def roles(self) -> dict[int, str]:
        """port -> 'master' or 'slave', as the live nodes see themselves."""
        out = {}
        for port in self.alive():
            for line in self._cli(port, "cluster", "nodes").splitlines():
                words = line.split()
                if "myself" in words[2]:
                    out[port] = "master" if "master" in words[2] else "slave"
        return out

    def alive(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def healthy(self) -> bool:
        alive = self.alive()
        if not alive or any("cluster_state:ok" not in self._cli(p, "cluster", "info") for p in alive):
            return False
        return list(self.roles().values()).count("master") == 3

    def masters(self) -> list[int]:
        return sorted(p for p, role in self.roles().items() if role == "master")

    def keys_per_master(self) -> dict[int, int]:
        return {p: int(self._cli(p, "dbsize") or 0) for p in self.masters()}

    def kill(self, port: int) -> None:
        """A crash (SIGKILL), not a clean shutdown."""
        self.processes[port].kill()
        self.processes[port].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
