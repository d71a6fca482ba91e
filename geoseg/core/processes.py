"""Processes of this machine: whether one that left something behind (a lease, a staging
folder) still runs. A pid means something only in its PID namespace: containers sharing a host
name each number their processes from 1."""

from __future__ import annotations

import os


def pid_namespace() -> str:
    """This process's PID namespace (``pid:[4026531836]``), in which its pid means something;
    "" where the system has none to read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs in this PID namespace. One of another user runs; one
    that cannot be asked about (a pid out of range) is taken as running: what it left is kept."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, someone else's
        return False
    return False
