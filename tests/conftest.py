"""Shared fixtures: isolation from the real skybatch home and database URLs.

PostgreSQL tests run when ``SKYBATCH_TEST_POSTGRES_URL`` points at a server whose user
may create databases (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``); each
test gets a fresh database that is dropped afterwards. Without it they are skipped.

S3 tests run against a real S3 server on this machine: moto's server mode (``moto[server]``
from the test extras), started once per session on a free loopback port. Outside CI they
are skipped, with the reason, when it cannot start; under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

POSTGRES_ENV = "SKYBATCH_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _isolated_skybatch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point SKYBATCH_HOME at a temporary directory and drop other SKYBATCH_* variables."""
    for name in list(os.environ):
        if name.upper().startswith("SKYBATCH_") and not name.upper().startswith("SKYBATCH_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "skybatch-home"
    monkeypatch.setenv("SKYBATCH_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what configure_logging (run by every CLI invocation) did to the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic_level = logging.getLogger("alembic").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic_level)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a not yet existing SQLite file in a not yet existing directory."""
    return f"sqlite:///{tmp_path / 'state' / 'skybatch.sqlite3'}"


@pytest.fixture(scope="session")
def _postgres_server() -> str:
    """URL of the PostgreSQL server for tests, or skip with the reason."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} not set")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    masked = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        pytest.skip(f"PostgreSQL at {masked} not reachable: {first_line}")
    finally:
        engine.dispose()
    return url


@contextmanager
def _fresh_postgres_database(server_url: str) -> Iterator[str]:
    """URL of a new, uniquely named database on the server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"skybatch_test_{uuid.uuid4().hex}"
    admin_url = make_url(server_url).set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def postgres_url(_postgres_server: str) -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database, dropped after the test."""
    with _fresh_postgres_database(_postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def session_postgres_url(_postgres_server: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL database kept for the whole session (for a world that
    is built once and only read by its tests), dropped at the end."""
    with _fresh_postgres_database(_postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty state database URL: SQLite, then PostgreSQL when available."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@dataclass(frozen=True)
class S3Server:
    """A running local S3 server: its endpoint URL and a boto3 client on it."""

    endpoint_url: str
    client: Any


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the local S3 server is needed under CI: {reason}")
    pytest.skip(f"no local S3 server: {reason}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on a free 127.0.0.1 port for the session, with S3_ENDPOINT_URL
    and test credentials in the environment (jobs started by a run inherit them)."""
    from skybatch.testing.s3 import S3ServerError, local_s3_server, s3_environment

    try:
        import boto3
    except ImportError:
        _unavailable("boto3 is not installed (pip install -e '.[test]')")
    home = tmp_path_factory.mktemp("s3-server")
    with ExitStack() as stack:
        try:
            endpoint_url = stack.enter_context(local_s3_server(home))
        except S3ServerError as exc:
            _unavailable(str(exc))
        environment = s3_environment(endpoint_url, home)
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            yield S3Server(endpoint_url, boto3.client("s3", endpoint_url=endpoint_url))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the local S3 server (its name)."""
    name = f"skybatch-{uuid.uuid4().hex[:16]}"
    s3_server.client.create_bucket(Bucket=name)
    return name
