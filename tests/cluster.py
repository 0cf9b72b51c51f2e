"""A localhost cluster for multi-worker tests: free ports and each worker's ``TF_CONFIG``."""

from __future__ import annotations

import json
import socket


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(workers: int) -> list[str]:
    """``TF_CONFIG`` of each of ``workers`` workers on localhost (worker 0 is the chief)."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(workers)]
