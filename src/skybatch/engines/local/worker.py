"""The child side of the local engine: warm worker loop and the process-mode command.

A warm worker is a long-lived process that imports the heavy modules (the LSST
middleware, the job wrapper) once and then runs job after job in-process; that is
what makes short jobs cheap on one machine. Process mode instead starts a fresh
interpreter per job with :func:`process_command`. Both call the same runner
(``"module:function"``, taking a spec path, returning an exit code) with standard
output and error sent to a per-job log file, so a job behaves and reports the same
in both modes.

A warm worker also tells the runner's module that this process will run many jobs:
if the module defines :data:`WARM_HOOK` (``enable_process_cache()``), the worker calls
it once before the first job, and the runner may then keep per-process caches of what
does not change between jobs (the job wrapper keeps its opened quantum graph and
parsed butler configuration). Process mode never calls it.

Messages on the worker's pipe are small JSON objects (no pickle crosses the pipe):

- worker -> engine: ``{"op": "ready", "pid", "preload_errors"}`` once, then
  ``{"op": "done", "exit_code", "error"}`` per job; or ``{"op": "fatal", "error"}``
  if the runner cannot be loaded.
- engine -> worker: ``{"op": "run", "spec", "log"}`` or ``{"op": "stop"}``.

This module is imported by every worker, so it imports nothing heavy itself.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = [
    "WARM_HOOK",
    "exit_code_of",
    "process_command",
    "resolve_runner",
    "run_with_log",
    "worker_main",
]

Runner = Callable[[str], object]

#: Optional function of a runner's module that a warm worker calls once (no arguments).
WARM_HOOK = "enable_process_cache"


def resolve_runner(dotted: str) -> Runner:
    """Import ``"module:function"`` and return the function."""
    module_name, _, attr = dotted.partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    if not callable(function):
        raise TypeError(f"runner {dotted} is not callable")
    return function


def exit_code_of(value: object) -> int:
    """Map a runner's return value (or a SystemExit code) to an exit code like sys.exit."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value & 0xFF  # what the operating system keeps of an exit status
    return 1


def process_command(runner: str, spec_path: str) -> list[str]:
    """The argv of a process-mode job: a fresh interpreter calling the runner."""
    module_name, _, attr = runner.partition(":")
    code = (
        "import sys, faulthandler, importlib; faulthandler.enable(); "
        f"sys.exit(getattr(importlib.import_module({module_name!r}), {attr!r})(sys.argv[1]))"
    )
    return [sys.executable, "-c", code, spec_path]


def run_with_log(runner: Runner, spec_path: str, log_path: str) -> tuple[int, str | None]:
    """Run one job in this process with fds 1 and 2 sent to ``log_path``.

    Redirecting the file descriptors (not just ``sys.stdout``) also captures output
    of C extensions and child processes, and the faulthandler dump of a crash.
    Returns the exit code and, if the runner raised, ``"Type: message"``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    error: str | None = None
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                code = exit_code_of(runner(spec_path))
            except SystemExit as exc:
                code = exit_code_of(exc.code)
            except BaseException as exc:  # the job's failure, not the worker's
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    return code, error


def _send(conn: Connection, **message: Any) -> None:
    conn.send_bytes(json.dumps(message).encode())


def _warm_up(runner: str, errors: dict[str, str]) -> None:
    """Call the runner module's :data:`WARM_HOOK` if it has one; a failure is reported
    like a preload error (jobs then run without the runner's caches)."""
    module_name = runner.partition(":")[0]
    hook = getattr(sys.modules.get(module_name), WARM_HOOK, None)
    if not callable(hook):
        return
    try:
        hook()
    except Exception as exc:
        errors[f"{module_name}:{WARM_HOOK}"] = f"{type(exc).__name__}: {exc}"


def worker_main(conn: Connection, preload: list[str], runner: str, nice: int = 0) -> None:
    """Entry point of a warm worker process (multiprocessing target).

    The worker starts its own session so the engine can kill it together with
    anything the job started (one process group), and so a Ctrl-C in the terminal
    reaches only the engine, which then shuts workers down in order. With ``nice``
    it lowers its CPU priority first: workers warming up while the driver still
    builds the workflow then use idle cores without slowing it down.
    """
    os.setsid()
    if nice > 0:
        os.nice(nice)
    faulthandler.enable()
    # Started as daemon so an engine that is never closed does not keep the interpreter
    # alive at exit; but jobs (ctrl_mpexec -j N) must be able to start processes.
    multiprocessing.current_process().daemon = False
    preload_errors: dict[str, str] = {}
    gc.disable()  # imports make only long-lived objects: no collections among them
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception as exc:  # tolerated: e.g. the job wrapper not installed yet
            preload_errors[module] = f"{type(exc).__name__}: {exc}"
    try:
        function = resolve_runner(runner)
    except Exception as exc:
        gc.enable()
        _send(conn, op="fatal", error=f"cannot load runner {runner}: {type(exc).__name__}: {exc}")
        return
    _warm_up(runner, preload_errors)
    # The imports live as long as the worker: keep them out of every job's collections.
    gc.collect()
    gc.freeze()
    gc.enable()
    _send(conn, op="ready", pid=os.getpid(), preload_errors=preload_errors)
    # Jobs may chdir or set variables; the next job must not inherit that.
    cwd, environ = os.getcwd(), dict(os.environ)
    while True:
        try:
            message = json.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the engine is gone
            return
        if message.get("op") != "run":
            return
        code, error = run_with_log(function, message["spec"], message["log"])
        os.chdir(cwd)
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)
        try:
            _send(conn, op="done", exit_code=code, error=error)
        except OSError:
            return
