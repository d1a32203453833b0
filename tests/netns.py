"""Hosts on one network, made of Linux network namespaces: each host is a namespace with its own
address on a private /24, joined to a bridge in the root namespace (which holds the subnet's first
address), so the test process reaches every host and every host reaches the others.

``hosts(names)`` creates them and removes them on the way out, even after a failure; the names carry
the process id, so concurrent runs do not collide. It needs root (CAP_NET_ADMIN) and iproute2's
``ip``; without them it fails the test with the reason, it never skips.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import pytest

SUBNETS = ipaddress.ip_network("10.213.0.0/16")  # one /24 of it per run


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its address, and the root-namespace end of its cable (a veth)."""

    namespace: str
    address: str
    cable: str

    def command(self, *args: str) -> list[str]:
        """``args`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]


@dataclass(frozen=True)
class Network:
    """The bridge's address (the test process's side) and the hosts by name."""

    address: str
    hosts: dict[str, Host]

    def cut(self, name: str) -> None:
        """Unplug host ``name``: its cable goes down, so its packets are lost without a reset."""
        ip("link", "set", self.hosts[name].cable, "down")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"cannot build the test network: 'ip {' '.join(args)}' failed: {done.stderr.strip()}")


def why_not() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed: apt-get install iproute2"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN): run the test as root"
    return None


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``SUBNETS`` that no interface of this machine uses, starting from one chosen by pid."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    subnets = list(SUBNETS.subnets(new_prefix=24))
    for offset in range(len(subnets)):
        subnet = subnets[(os.getpid() + offset) % len(subnets)]
        if f" {subnet.network_address + 1}/" not in used:
            return subnet
    pytest.fail(f"no free /24 in {SUBNETS} for the test network")


@contextmanager
def hosts(names: Sequence[str]) -> Iterator[Network]:
    """A namespace per name on a fresh bridge; everything removed on the way out."""
    reason = why_not()
    if reason:
        pytest.fail(f"the multi-host test needs Linux network namespaces: {reason}")
    tag = f"dk{os.getpid()}"  # interface names have at most 15 characters
    subnet = free_subnet()
    addresses = subnet.hosts()
    bridge, gateway = f"{tag}br", str(next(addresses))
    with ExitStack() as cleanup:
        ip("link", "add", bridge, "type", "bridge")
        cleanup.callback(subprocess.run, ["ip", "link", "del", bridge], capture_output=True)
        ip("addr", "add", f"{gateway}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        made = {}
        for index, name in enumerate(names):
            host = Host(f"daskem-{os.getpid()}-{name}", str(next(addresses)), f"{tag}h{index}")
            ip("netns", "add", host.namespace)
            cleanup.callback(subprocess.run, ["ip", "netns", "del", host.namespace], capture_output=True)
            ip("link", "add", host.cable, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            ip("link", "set", host.cable, "master", bridge, "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.namespace, "link", "set", "eth0", "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
            made[name] = host
        yield Network(gateway, made)
