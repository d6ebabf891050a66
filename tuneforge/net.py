"""Ports: one home for the free-port probe that the worker (a distributed run's rendezvous),
the tests' servers and the benchmarks use."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now. The probe's socket is closed before
    this returns, so another process may take the port before the caller binds it."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
