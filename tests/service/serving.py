"""``skybatch serve`` as a user starts it, for the service's end-to-end tests: a process
on a free port, waited for until /healthz answers, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running server: its URL, and once stopped, its output and exit status."""

    url: str
    port: int
    output: str = ""
    returncode: int | None = None
    log: Path | None = field(default=None, repr=False)


@contextmanager
def serving(home: Path, *options: str, log: Path | None = None) -> Iterator[Served]:
    """``skybatch --home HOME serve --port P OPTIONS``; its output goes to ``log`` (else
    it is kept for :attr:`Served.output`). Only the test settings of the environment
    (``SKYBATCH_TEST_*``) reach it, never another skybatch home's."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SKYBATCH_") or k.startswith("SKYBATCH_TEST_")
    }
    command = [sys.executable, "-m", "skybatch", "--home", str(home), "serve"]
    command += ["--port", str(port), *options]
    out = log.open("wb") if log is not None else subprocess.PIPE
    server = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"}
    )
    served = Served(f"http://127.0.0.1:{port}", port, log=log)

    def output() -> str:
        if log is not None:
            return log.read_text(errors="replace")
        return server.stdout.read().decode() if server.stdout else ""

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{served.url}/healthz", timeout=2).json() == {"status": "ok"}:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert server.poll() is None, output()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        yield served
    finally:
        server.send_signal(signal.SIGINT)
        try:
            printed = server.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            printed = server.communicate()[0]
        if not isinstance(out, int):
            out.close()
        served.output = printed.decode() if printed else output()
        served.returncode = server.returncode
