"""Run cases x methods: locally in forked worker processes, or on a Ray cluster.

Each (case, method) task reads the case's blind copy and writes ``<out>/detectors/<method>/<case_id>.json`` (a
``chaosbench.detectors.api.Result``). A task that
already has its file is skipped, so rerunning the same command resumes. Locally every task runs in its own
forked process (its own process group) with a wall-clock limit: a hung method is killed and recorded as
``timeout``; a worker that dies is recorded as ``failed`` with its exit code. Forking from a parent that has
already imported the methods keeps the per-task cost to milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from chaosbench.case import atomic_write_json
from chaosbench.detectors.api import Result, run_detector
from chaosbench.eval.discover import CaseRef, open_view
from chaosbench.eval.methods import Method

OnDone = Callable[["Task", str], None]  # (task, status) after each task, for progress displays


@dataclass(frozen=True)
class Task:
    case: CaseRef
    method: Method
    results: Path  # the evaluation's output directory
    blind: Path | None = None  # the case's blind copy (chaosbench.eval.blind); the detector reads only this

    @property
    def out(self) -> Path:
        return self.results / "detectors" / self.method.name / f"{self.case.case_id}.json"


def compute(task: Task) -> dict:
    """Run one method on one case in this process; never raises."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # workers are the parallelism; BLAS threads would oversubscribe the cores
        try:
            detect = task.method.make()
        except Exception as exc:  # noqa: BLE001 - an import failure is this method's failure
            return Result.failure(task.method.name, str(exc).splitlines()[0], status="unavailable").to_json()
        cpu0 = time.process_time()
        if task.blind is None:
            return Result.failure(task.method.name, "no blind copy of the case (internal error)").to_json()
        result = run_detector(task.method.name, detect, open_view(task.case, task.blind))
        # CPU seconds do not depend on how loaded the machine is, unlike runtime_s (wall)
        return replace(result, extra={**result.extra, "cpu_s": round(time.process_time() - cpu0, 4)}).to_json()


def write_result(task: Task, result: dict) -> None:
    atomic_write_json(task.out, result)


def read_result(task: Task) -> Result | None:
    try:
        return Result.from_json(json.loads(task.out.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, KeyError):
        return None


def _child(task: Task) -> None:
    os.setsid()  # own process group: a timeout kills whatever the method started too
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # methods print progress bars; RCAEval's stderr is captured at the Python level
    os.dup2(devnull, 2)
    write_result(task, compute(task))


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def preload(methods: Sequence[Method]) -> None:
    """Import the methods once in the parent so that forked tasks start warm.

    ``status()`` imports what the method calls (an RCAEval adapter imports RCAEval only when called); the
    frozen heap keeps the collector from writing to, and so copying, the parent's pages in every task.
    """
    import gc

    for m in methods:
        try:
            m.make()
            m.status()
        except Exception:  # noqa: BLE001, S110 - the task reports it
            pass
    gc.freeze()


def run_local(tasks: Sequence[Task], workers: int, timeout_s: float, on_done: OnDone | None = None) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("fork")
    pending, running = deque(tasks), {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                task = pending.popleft()
                proc = ctx.Process(target=_child, args=(task,))  # not daemon: methods may start pools
                proc.start()
                running[proc.sentinel] = (proc, task, time.monotonic())
            for sentinel in wait(list(running), timeout=0.2):
                proc, task, _ = running.pop(sentinel)
                proc.join()
                _finish(task, proc.exitcode, on_done)
            _kill_overdue(running, timeout_s, on_done)
    finally:
        for proc, _, _ in running.values():  # interrupted: leave no worker behind
            _kill(proc.pid)
            proc.join()


def _kill_overdue(running: dict, timeout_s: float, on_done: OnDone | None) -> None:
    now = time.monotonic()
    for sentinel, (proc, task, t0) in list(running.items()):
        if now - t0 > timeout_s:
            _kill(proc.pid)
            proc.join()
            del running[sentinel]
            write_result(task, Result.failure(task.method.name, f"timed out after {timeout_s:g} s (killed)",
                                              status="timeout", runtime_s=now - t0).to_json())
            if on_done:
                on_done(task, "timeout")


def _finish(task: Task, exitcode: int | None, on_done: OnDone | None) -> None:
    result = read_result(task)
    if result is None:
        how = f"signal {-exitcode}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
        result = Result.failure(task.method.name, f"worker died ({how}) without a result")
        write_result(task, result.to_json())
    if on_done:
        on_done(task, result.status)


def run_inline(tasks: Sequence[Task], on_done: OnDone | None = None) -> None:
    """In this process, no timeout (workers=0): for debugging."""
    for task in tasks:
        result = compute(task)
        write_result(task, result)
        if on_done:
            on_done(task, result["status"])


def run_ray(tasks: Sequence[Task], address: str, workers: int, timeout_s: float,
            on_done: OnDone | None = None) -> None:
    """Fan out over a Ray cluster (``address``: ``auto``, ``ray://host:port``, ``host:port`` or ``local``).

    Case directories must be readable at the same path on every Ray node (shared filesystem), and plugin
    modules importable there (PYTHONPATH); results come back to this process, which writes them. A task past the limit is cancelled with force (its worker dies).
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 num_cpus=max(1, workers) if address == "local" else None)
    remote = ray.remote(max_retries=0, num_cpus=1)(compute)
    pending, running = deque(tasks), {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                task = pending.popleft()
                running[remote.remote(task)] = (task, time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                task, t0 = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a dead worker is this task's failure
                    result = Result.failure(task.method.name, f"ray task failed: {str(exc).splitlines()[0]}",
                                            runtime_s=time.monotonic() - t0).to_json()
                write_result(task, result)
                if on_done:
                    on_done(task, result["status"])
            _cancel_overdue(ray, running, timeout_s, on_done)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _cancel_overdue(ray, running: dict, timeout_s: float, on_done: OnDone | None) -> None:
    now = time.monotonic()
    for ref, (task, t0) in list(running.items()):
        if now - t0 > timeout_s:
            ray.cancel(ref, force=True)
            del running[ref]
            write_result(task, Result.failure(task.method.name, f"timed out after {timeout_s:g} s (cancelled)",
                                              status="timeout", runtime_s=now - t0).to_json())
            if on_done:
                on_done(task, "timeout")
