"""A test host on its own network: a worker in a network namespace whose only way to Postgres and
Redis is a veth link that the test can cut and restore (a partition, not a crash).

Two namespaces the test makes and removes: ``host`` (where the worker runs) and ``gateway``,
joined by a veth pair. The gateway's end listens on the Postgres and Redis ports and forwards to
this machine's own 127.0.0.1: its listening sockets are made from a thread that entered the
gateway namespace (setns), its upstream connections from this namespace. Cutting the link
(``ip link set ... down``) leaves every connection open and silent on both sides, as a network
partition does; nothing answers a packet, nothing resets a connection.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def namespaces_available() -> str | None:
    """None when this machine lets the tests make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"sam3probe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (OSError, subprocess.SubprocessError) as error:
        return f"`ip netns add` failed here: {error}"
    return None


@dataclass
class PartitionableHost:
    name: str
    gateway: str
    address: str  # the gateway's address, as the host sees it
    ports: tuple[int, ...]
    _listeners: list[socket.socket] = field(default_factory=list)
    _closing: threading.Event = field(default_factory=threading.Event)

    @property
    def command_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("-n", self.name, "link", "set", "veth-host", "down")

    def restore(self) -> None:
        _ip("-n", self.name, "link", "set", "veth-host", "up")

    def _listen_in_gateway(self) -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        gateway = os.open(f"/var/run/netns/{self.gateway}", os.O_RDONLY)
        try:
            _setns(gateway)
            for port in self.ports:
                listener = socket.create_server((self.address, port), reuse_port=False)
                self._listeners.append(listener)
        finally:
            _setns(own)  # this thread's upstream connections are made here, on 127.0.0.1
            os.close(own)
            os.close(gateway)

    def _serve(self, listener: socket.socket, port: int) -> None:
        while not self._closing.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def start(self) -> None:
        opened = threading.Thread(target=self._listen_in_gateway)
        opened.start()
        opened.join()
        for listener, port in zip(self._listeners, self.ports):
            threading.Thread(target=self._serve, args=(listener, port), daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def partitionable_host(ports: tuple[int, ...]) -> Iterator[PartitionableHost]:
    """A network namespace whose traffic to ``ports`` reaches this machine's 127.0.0.1 through a
    veth link the test can cut. Removed at the end, whatever happened."""
    tag = secrets.token_hex(3)
    name, gateway = f"sam3host{tag}", f"sam3gw{tag}"
    subnet = 100 + secrets.randbelow(150)
    host = PartitionableHost(name, gateway, f"10.231.{subnet}.1", ports)
    try:
        _ip("netns", "add", name)
        _ip("netns", "add", gateway)
        _ip("link", "add", "veth-host", "netns", name, "type", "veth", "peer", "name", "veth-gw", "netns", gateway)
        _ip("-n", gateway, "addr", "add", f"10.231.{subnet}.1/30", "dev", "veth-gw")
        _ip("-n", name, "addr", "add", f"10.231.{subnet}.2/30", "dev", "veth-host")
        for namespace, device in ((gateway, "veth-gw"), (name, "veth-host")):
            _ip("-n", namespace, "link", "set", device, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        host.start()
        yield host
    finally:
        host.close()
        for namespace in (name, gateway):
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "del", namespace)
