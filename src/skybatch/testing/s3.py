"""A real S3 server on this machine for tests and benchmarks: moto's server mode.

``moto[server]`` (in skybatch's test extras) serves the S3 API over HTTP; started on a
free loopback port, it is what an S3 datastore's tests and the object-store benchmark
talk to through the ordinary clients (boto3, lsst-resources), with test credentials.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["S3ServerError", "local_s3_server", "s3_environment"]


class S3ServerError(RuntimeError):
    """The local S3 server could not be started (the message says why)."""


def s3_environment(endpoint_url: str, home: Path) -> dict[str, str]:
    """What lsst-resources and boto3 read to reach ``endpoint_url`` with test
    credentials (no AWS configuration of the user's is read: ``home`` has none)."""
    no_proxy = ",".join(
        part for part in (os.environ.get("NO_PROXY"), "127.0.0.1", "localhost") if part
    )
    return {
        "NO_PROXY": no_proxy,  # the server is on loopback, whatever proxy is configured
        "no_proxy": no_proxy,
        "S3_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "skybatch-test",
        "AWS_SECRET_ACCESS_KEY": "skybatch-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_s3_server(home: Path, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``moto_server`` on a free 127.0.0.1 port while in the block; yield its URL.

    Its log goes to ``home/moto.log``. Raises S3ServerError when it is not installed
    or does not answer within ``timeout_s``; the server is stopped on exit.
    """
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which(
        "moto_server"
    )
    if binary is None:
        raise S3ServerError("moto_server is not installed (pip install -e '.[test]')")
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(home / "moto.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    direct.open(f"{url}/moto-api/", timeout=1).close()
                    break
                except OSError as exc:
                    if process.poll() is not None or time.monotonic() > deadline:
                        text = (home / "moto.log").read_text(errors="replace").strip()[-500:]
                        raise S3ServerError(
                            f"moto_server did not answer on {url} ({exc}): {text}"
                        ) from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
