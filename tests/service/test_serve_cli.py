"""``skybatch serve`` as a user starts it: a real uvicorn process on a free port,
answering over TCP; beyond loopback only once a token exists."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from skybatch.cli.main import main
from skybatch.cli.serve import is_loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


def test_serve_answers_over_tcp_and_binds_beyond_loopback_once_a_token_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "serve", "--host", "0.0.0.0"]) == 2  # no token yet
    capsys.readouterr()
    assert main(["--home", str(home), "token", "create", "--name", "ops", "--role", "viewer"]) == 0
    secret = capsys.readouterr().out.strip()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skybatch",
            "--home",
            str(home),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/campaigns").status_code == 401
        answer = httpx.get(f"{url}/api/campaigns", headers={"Authorization": f"Bearer {secret}"})
        assert (answer.status_code, answer.json()) == (200, [])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output = server.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0].decode()
    assert f"serving skybatch on http://0.0.0.0:{port}" in output
    assert server.returncode in (0, 130), output
