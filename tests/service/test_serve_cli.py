"""``skybatch serve`` as a user starts it: a real uvicorn process on a free port,
answering over TCP; beyond loopback only once a token exists."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving import serving

from skybatch.cli.main import main
from skybatch.cli.serve import is_loopback


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
    with serving(home, "--host", "0.0.0.0") as served:
        port, url = served.port, served.url
        assert httpx.get(f"{url}/api/campaigns").status_code == 401
        answer = httpx.get(f"{url}/api/campaigns", headers={"Authorization": f"Bearer {secret}"})
        assert (answer.status_code, answer.json()) == (200, [])
    output = served.output
    assert f"serving skybatch on http://0.0.0.0:{port}" in output
    assert served.returncode in (0, 130), output
