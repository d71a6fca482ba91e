"""Machines without a shared disk, on one host: network namespaces on a private link-local LAN.

``private_lan(n)`` makes a Linux bridge in the host's network namespace with one link-local
address (169.254.S.1/24, S picked at random among subnets the host does not use) and ``n``
network namespaces, each joined to the bridge by a veth pair and given 169.254.S.(2 + i). The
namespaces have no default route: they reach the host's bridge address and each other, nothing
else. ``Lan.spawn`` starts a command inside one namespace and, in a mount namespace of its own,
with empty tmpfs mounted over the folders it must not see (the test's temporary files), so what
the host wrote there is not on that "machine's" disk.

Everything made is removed on leaving the context, processes first, whether the body failed or
not. ``unavailable()`` says why this cannot run here (not root, no ``ip``/``unshare``, no
namespaces or bridges in this kernel or container), for a skip reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

RESERVED_SUBNETS = {0, 169, 254, 255}  # 169.254.169.254 is a cloud metadata address: stay clear


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or ``None`` when they can (tried for real)."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces, veth pairs and a bridge"
    missing = [tool for tool in ("ip", "unshare", "mount") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (iproute2, util-linux)"
    try:
        with private_lan(1):
            pass
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return f"cannot create network namespaces and a bridge here: {detail.strip()}"
    return None


@dataclass
class Lan:
    """A bridge with ``host`` on it and one namespace per "machine" in ``namespaces``."""

    tag: str
    host: str
    namespaces: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"gs{self.tag}br"

    def spawn(self, machine: int, argv: Sequence[str], *, hide: Sequence[str] = (),
              env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``machine`` with an empty tmpfs over each folder in
        ``hide`` (in a private mount namespace: the host and other processes still see them)."""
        mounts = "".join(f"mount -t tmpfs -o size=256m,mode=1777 geoseg-hidden {shlex.quote(str(p))} && "
                         for p in hide)
        script = f'{mounts}exec "$@"'
        command = ["ip", "netns", "exec", self.namespaces[machine], "unshare", "--mount",
                   "--propagation", "private", "sh", "-c", script, "sh", *argv]
        process = subprocess.Popen(command, env=env, start_new_session=True, **popen)
        self.processes.append(process)
        return process

    def end_processes(self, *, also: Sequence[subprocess.Popen] = ()) -> None:
        """End every process started by :meth:`spawn`, and ``also`` those, all at once."""
        end_processes([*self.processes, *also])
        self.processes.clear()

    def stop(self) -> None:
        """End every process in the namespaces (those spawned, then any left in the namespace's
        own pid list), then remove namespaces, veths and the bridge."""
        self.end_processes()
        for name in self.namespaces:
            listed = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in map(int, listed):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _ip("netns", "delete", name, check=False)
        for link in [*self.links, self.bridge]:
            if _ip("link", "show", link, check=False).returncode == 0:
                _ip("link", "delete", link, check=False)
        self.namespaces.clear()
        self.links.clear()


def end_processes(processes: Sequence[subprocess.Popen], grace: float = 2.0) -> None:
    """SIGTERM to each process's group (started with ``start_new_session``), all together; SIGKILL
    to the groups of those still running after ``grace`` seconds, and to any stragglers."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        _signal_group(process, signal.SIGKILL)  # the leader if still there, and its group's others
        process.wait(10)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show").stdout
    taken = {ipaddress.ip_interface(word).network for word in used.split() if "/" in word
             and word.count(".") == 3}
    choices = [s for s in range(1, 255) if s not in RESERVED_SUBNETS]
    random.shuffle(choices)
    for subnet in choices:
        net = ipaddress.ip_network(f"169.254.{subnet}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return subnet
    raise OSError("no free 169.254.S.0/24 subnet on this host")


@contextlib.contextmanager
def private_lan(machines: int) -> Iterator[Lan]:
    """A bridge on the host at 169.254.S.1 and ``machines`` namespaces at 169.254.S.2, .3, ..."""
    tag = uuid.uuid4().hex[:6]
    subnet = _free_subnet()
    lan = Lan(tag, f"169.254.{subnet}.1")
    try:
        _ip("link", "add", lan.bridge, "type", "bridge")
        _ip("addr", "add", f"{lan.host}/24", "dev", lan.bridge)
        _ip("link", "set", lan.bridge, "up")
        for i in range(machines):
            _join(lan, i, f"169.254.{subnet}.{2 + i}")
        yield lan
    finally:
        lan.stop()


def _join(lan: Lan, i: int, address: str) -> None:
    name, outside, inside = f"geoseg-{lan.tag}-{i}", f"gs{lan.tag}h{i}", f"gs{lan.tag}n{i}"
    _ip("netns", "add", name)
    lan.namespaces.append(name)
    _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
    lan.links.append(outside)
    _ip("link", "set", inside, "netns", name)
    _ip("link", "set", outside, "master", lan.bridge)
    _ip("link", "set", outside, "up")
    for args in (("addr", "add", f"{address}/24", "dev", inside), ("link", "set", inside, "up"),
                 ("link", "set", "lo", "up")):
        _ip("-n", name, *args)
    lan.addresses.append(address)
