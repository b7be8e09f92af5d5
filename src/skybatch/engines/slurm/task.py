"""What runs inside a Slurm job: one skybatch job, its exit file, its own limits.

``python -m skybatch.engines.slurm.task --runner MODULE:FUNC SPEC.json`` sends its
output to the job's ``engine-<attempt>.log``, calls the runner (by default the job
wrapper, :func:`skybatch.job.main.run_job_file`) with the spec path, and writes
``exit-<attempt>.json`` beside the spec: exit code, failure kind, message, peak RSS.
That file tells the engine how the job ended even where Slurm has no accounting.

A watchdog thread enforces the job's own ``walltime_s`` to the second and, with
``--memory-watchdog``, its ``memory_mb`` (RSS of the job and its children), so a job
over its limit is reported as out of memory with its peak; Slurm's ``--time`` and
cgroup ``--mem`` limits, set a little higher, are the backstop.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["exit_file", "main", "read_exit_file"]

EXIT_SCHEMA_VERSION = 1
EXIT_TIMEOUT = 124
EXIT_OOM = 137


def exit_file(spec_path: Path, attempt: int) -> Path:
    return spec_path.parent / f"exit-{attempt}.json"


def read_exit_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_exit(path: Path, record: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"schema_version": EXIT_SCHEMA_VERSION, **record}))
    os.replace(partial, path)


def _engine_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class _Watchdog(threading.Thread):
    """Samples the job's RSS (with children) and its age; stops it over a limit."""

    def __init__(self, memory_mb: int | None, walltime_s: float, on_limit: Any) -> None:
        super().__init__(name="skybatch-watchdog", daemon=True)
        self.memory_mb, self.walltime_s, self.on_limit = memory_mb, walltime_s, on_limit
        self.start_time = time.monotonic()
        self.peak_mb = 0.0

    def sample(self) -> float:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak_mb = max(self.peak_mb, total / 2**20)
        return total / 2**20

    def run(self) -> None:
        while True:
            rss = self.sample()
            if self.memory_mb is not None and rss > self.memory_mb:
                self.on_limit(
                    "out_of_memory",
                    EXIT_OOM,
                    f"job used {rss:.0f} MB, over its memory request of {self.memory_mb} MB",
                )
                return
            if time.monotonic() - self.start_time > self.walltime_s:
                self.on_limit(
                    "timeout", EXIT_TIMEOUT, f"job ran over its walltime of {self.walltime_s} s"
                )
                return
            time.sleep(0.05 if rss < 0.8 * (self.memory_mb or float("inf")) else 0.01)


def _kill_children() -> None:
    import psutil

    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skybatch.engines.slurm.task")
    parser.add_argument("--runner", default="skybatch.job.main:run_job_file")
    parser.add_argument("--memory-watchdog", action="store_true")
    parser.add_argument("spec")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    spec = json.loads(spec_path.read_text())
    attempt = int(spec.get("attempt", 1))
    engine_id = _engine_id()
    if engine_id:
        os.environ["SKYBATCH_ENGINE_JOB_ID"] = engine_id
    log = open(spec_path.parent / f"engine-{attempt}.log", "ab", buffering=0)  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    target = exit_file(spec_path, attempt)
    started = time.time()
    lock = threading.Lock()

    def finish(failure: str, code: int, message: str | None, peak: float) -> None:
        with lock:  # the first of the job and the watchdog to finish wins
            if target.exists():
                return
            _write_exit(
                target,
                {
                    "engine_id": engine_id,
                    "exit_code": code,
                    "failure": failure,
                    "message": message,
                    "max_rss_mb": math.ceil(peak * 10) / 10,  # up: a peak over a limit stays over
                    "start": started,
                    "end": time.time(),
                },
            )

    def on_limit(failure: str, code: int, message: str) -> None:
        _kill_children()
        finish(failure, code, message, watchdog.peak_mb)
        print(f"skybatch: {message}", file=sys.stderr, flush=True)
        os._exit(code)

    memory = int(spec["memory_mb"]) if args.memory_watchdog else None
    watchdog = _Watchdog(memory, float(spec.get("walltime_s", 3600)), on_limit)
    watchdog.start()
    module, _, function = args.runner.partition(":")
    message = None
    try:
        code = int(getattr(importlib.import_module(module), function)(str(spec_path)) or 0)
    except BaseException as exc:  # the job's failure, reported, not a crash of this script
        traceback.print_exc()
        code = 1
        message = f"{type(exc).__name__}: {exc}"
    sys.stdout.flush()
    sys.stderr.flush()
    finish(
        "none" if code == 0 else "error", code, message, max(watchdog.peak_mb, watchdog.sample())
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
