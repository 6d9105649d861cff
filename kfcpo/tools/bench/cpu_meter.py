"""Cores busy over a window of wall time: CPU seconds of this process and of its child
processes (env workers), divided by the wall seconds.

Children that are alive are read from /proc (Linux); children that exited and were
reaped in the window come from getrusage(RUSAGE_CHILDREN), which counts only reaped ones.
A child is in exactly one of the two at any time, so the sum never counts it twice.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/<pid>/stat fields after the ")" closing the command name (0-based):
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14


def can_see_children() -> bool:
    """Whether live child processes can be read (a /proc file system)."""
    return PROC.is_dir()


def _live_children_seconds(parent: int) -> float:
    total = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[_PPID]) == parent:
            total += sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return total / _TICKS


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its children."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = _live_children_seconds(os.getpid()) if can_see_children() else 0.0
    return time.process_time() + reaped.ru_utime + reaped.ru_stime + live


@dataclass
class Window:
    """Wall and CPU seconds of one measured window."""

    wall_s: float
    cpu_s: float

    @property
    def cores(self) -> float:
        """Cores busy on average over the window."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


class CpuMeter:
    """``start()`` ... ``stop()`` -> a Window; reusable."""

    def __init__(self) -> None:
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        """Open a window now."""
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> Window:
        """The window since the last `start()`."""
        return Window(time.perf_counter() - self._wall, cpu_seconds() - self._cpu)
