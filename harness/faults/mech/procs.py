"""Helper processes of a fault (stressors, hogs, the delay handler): start, find, kill.

Each process a fault starts carries ``CHAOSBENCH_FAULT=<key>`` in its environment, inherited by its children
(stress-ng workers). Recovery finds them by that marker in ``/proc/*/environ``, so it needs no pid list and
also catches a process started just before a crash, before its pid reached the journal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from chaosbench.errors import CommandFailed
from chaosbench.faults.mech.netns import command

MARKER_ENV = "CHAOSBENCH_FAULT"


def start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of ``pid``: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def state(pid: int) -> str | None:
    """One-letter process state (R, S, T, Z, ...) or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def same_process(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _join_cgroups(dirs: Sequence[str]) -> None:
    for d in dirs:
        Path(d, "cgroup.procs").write_text(str(os.getpid()))


def spawn(
    argv: Sequence[str],
    marker: str,
    *,
    cgroup_dirs: Sequence[str] = (),
    cpus: Sequence[int] = (),
    netns: str | None = None,
    extra_env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` marked with ``marker``, in the given cgroups (before exec, so children inherit them),
    pinned to ``cpus``, inside ``netns``; in its own session so a terminal Ctrl-C reaches only the harness."""
    env = {**os.environ, **(extra_env or {}), MARKER_ENV: marker}
    cmd = command(argv, netns)
    dirs, cores = list(dict.fromkeys(cgroup_dirs)), set(cpus)

    def setup() -> None:
        _join_cgroups(dirs)
        if cores:
            os.sched_setaffinity(0, cores)

    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=setup, start_new_session=True
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def _session(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def find_marked(marker: str, sessions: Sequence[int] = ()) -> list[int]:
    """Pids of live (not zombie) processes of a fault: those whose environment carries ``marker``, and every
    process in their sessions or in ``sessions`` (stress-ng workers overwrite their environment with their
    process title, but stay in the session of the stress-ng that ``spawn`` started)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    marked: set[int] = set()
    sids: dict[int, int | None] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        sids[pid] = _session(entry.name)
        try:
            if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                marked.add(pid)
        except OSError:
            continue
    leaders = marked | set(sessions)
    found = marked | {pid for pid, sid in sids.items() if sid in leaders}
    return sorted(p for p in found if state(p) not in (None, "Z"))


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def kill_marked(marker: str, sessions: Sequence[int] = (), timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of the fault (see ``find_marked``) until none is left; returns the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while pids := find_marked(marker, sessions):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)
            if pid not in killed:
                killed.append(pid)
        if time.monotonic() > deadline:
            raise CommandFailed(f"processes of fault {marker} survive SIGKILL: {pids}")
        time.sleep(0.05)
    for pid in killed:
        _reap(pid)
    return killed


def send(pid: int, started: int | None, sig: signal.Signals) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that had start time ``started``."""
    if not same_process(pid, started):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def set_affinity_all_threads(pid: int, cpus: Sequence[int]) -> int:
    """Pin every thread of ``pid`` to ``cpus`` (threads started later inherit from their creator); returns the
    number of threads changed. A thread that exits meanwhile is skipped."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), set(cpus))
            n += 1
        except (ProcessLookupError, FileNotFoundError):
            continue
    return n
