"""The parent side of what runs a job: a warm worker or a one-job child process.

Both are killed as a process tree (the job may have started children): the group
leader's session (warm workers call ``setsid``; process-mode children start a new
session) catches descendants that were re-parented, the psutil snapshot catches
any that left the group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from skybatch.engines.local.jobs import LocalJob
from skybatch.engines.local.worker import process_command, worker_main

__all__ = ["ProcessRun", "TreeSampler", "WarmWorker", "kill_tree", "tree_rss_mb"]

MB = 1024 * 1024


def tree_rss_mb(proc: psutil.Process) -> float | None:
    """Resident memory of a process and all its descendants in MB (None if it is gone).

    RSS counts shared pages once per process, so it over-estimates forked children
    that share memory: it errs on the side of the limit, as a batch system would.
    """
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / MB


class TreeSampler:
    """:func:`tree_rss_mb` for frequent sampling: listing a process's descendants scans
    every process of the machine, so the list is refreshed every ``refresh_s`` seconds
    while the members' RSS (one small /proc read each) is read on every sample."""

    def __init__(self, refresh_s: float = 1.0) -> None:
        self.refresh_s = refresh_s
        self._members: dict[int, tuple[float, list[psutil.Process]]] = {}

    def rss_mb(self, proc: psutil.Process) -> float | None:
        now = time.monotonic()
        cached = self._members.get(proc.pid)
        if cached is None or now - cached[0] > self.refresh_s or cached[1][0] is not proc:
            try:
                members = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                self._members.pop(proc.pid, None)
                return None
            self._members[proc.pid] = (now, members)
        else:
            members = cached[1]
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                if member is proc:
                    self._members.pop(proc.pid, None)
                    return None
        return total / MB

    def forget(self, alive: set[int]) -> None:
        """Drop the cached trees of processes not in ``alive``."""
        for pid in [p for p in self._members if p not in alive]:
            del self._members[pid]


def kill_tree(proc: psutil.Process | None) -> None:
    """SIGKILL a session leader, its process group and every descendant still found."""
    if proc is None:
        return
    try:
        members = [proc, *proc.children(recursive=True)]
        if proc.is_running():  # psutil checks the pid was not reused
            os.killpg(proc.pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        members = [proc]
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            continue


def _psutil_process(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


class WarmWorker:
    """A long-lived worker process and the engine's end of its pipe."""

    def __init__(
        self, ctx: BaseContext, preload: list[str], runner: str, name: str, nice: int = 0
    ) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
            target=worker_main, args=(child, preload, runner, nice), name=name, daemon=True
        )
        self.process.start()
        child.close()  # only the worker holds its end now: EOF tells us it is gone
        self.ps = _psutil_process(self.process.pid)
        self.ready = False
        self.retiring = False  # told to stop or killed; reaped when it is gone
        self.eof = False
        self.job: LocalJob | None = None
        self.baseline_rss_mb: float | None = None

    @property
    def available(self) -> bool:
        return self.ready and not self.retiring and self.job is None

    def waitables(self) -> list[Any]:
        """What the engine's loop waits on: messages and process exit."""
        return [] if self.eof else [self.conn, self.process.sentinel]

    def receive(self) -> dict[str, Any] | None:
        """The next message if one is waiting; sets ``eof`` when the pipe closed."""
        if self.eof:
            return None
        try:
            if not self.conn.poll():
                return None
            message: dict[str, Any] = json.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.eof = True
            return None
        return message

    @property
    def gone(self) -> bool:
        return self.eof or not self.process.is_alive()

    def send(self, **message: Any) -> bool:
        """Send a message; False if the worker is gone."""
        try:
            self.conn.send_bytes(json.dumps(message).encode())
        except OSError:
            self.eof = True
            return False
        return True

    def run(self, job: LocalJob) -> bool:
        self.job = job
        return self.send(op="run", spec=str(job.spec_path), log=str(job.log_path))

    def stop(self) -> None:
        """Ask the worker to exit after its current message (idle workers exit at once)."""
        self.retiring = True
        self.send(op="stop")

    def kill(self) -> None:
        self.retiring = True
        self.job = None
        kill_tree(self.ps)

    def reap(self, timeout: float) -> None:
        """Wait for the process to exit (killing it after ``timeout``) and close the pipe."""
        self.process.join(timeout)
        if self.process.is_alive():
            kill_tree(self.ps)
            self.process.join(5.0)
        self.conn.close()
        if not self.process.is_alive():
            self.process.close()


class ProcessRun:
    """One job in a fresh interpreter (process isolation mode)."""

    def __init__(self, job: LocalJob, runner: str, wake: Callable[[], None]) -> None:
        with open(job.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                process_command(runner, str(job.spec_path)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.job = job
        self.ps = _psutil_process(self.popen.pid)
        # A thread per child blocks in wait() so the engine learns of the exit at once
        # instead of at the next poll tick.
        self._waiter = threading.Thread(
            target=self._wait, args=(wake,), name=f"wait-{job.engine_id}", daemon=True
        )
        self._waiter.start()

    def _wait(self, wake: Callable[[], None]) -> None:
        self.popen.wait()
        wake()

    def returncode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        if self.popen.poll() is None:
            kill_tree(self.ps)

    def reap(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.ps)
            self.popen.wait()
        self._waiter.join(timeout)
