"""The run state machine: one table, one writer that refuses any other change."""

from __future__ import annotations

import inspect
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.state import open_state_db
from skybatch.errors import InputError
from skybatch.run import states
from skybatch.run.models import RunRow, RunState
from skybatch.run.states import RunStateError, allowed, change_run_state
from skybatch.settings import load_settings


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return open_state_db(load_settings(home=tmp_path / "home"))


def _run(sessions: sessionmaker[Session], name: str, state: RunState) -> None:
    with sessions.begin() as session:
        row = RunRow(name=name, repo="/repo", pipeline="p.yaml", workdir="/w", state=state.value)
        if state in states.TERMINAL:  # as an ended run has
            row.finished_at = datetime.now(UTC)
        session.add(row)


def _row(session: Session, name: str) -> RunRow:
    row = session.scalar(select(RunRow).where(RunRow.name == name))
    assert row is not None
    return row


def test_the_documented_table_is_the_table() -> None:
    doc = inspect.cleandoc(states.__doc__ or "")
    table = "\n".join("    " + line for line in states.state_table_text().splitlines())
    assert table in doc


def test_every_state_is_in_the_table() -> None:
    used = {t.source for t in states.TRANSITIONS} | {t.target for t in states.TRANSITIONS}
    assert used == set(RunState)
    assert states.INITIAL is RunState.PENDING
    assert not [t for t in states.TRANSITIONS if t.target is RunState.PENDING]


def test_every_allowed_transition_is_written(sessions: sessionmaker[Session]) -> None:
    for i, t in enumerate(states.TRANSITIONS):
        name = f"run/{i}"
        _run(sessions, name, t.source)
        with sessions.begin() as session:
            change_run_state(_row(session, name), t.target)
        with sessions() as session:
            row = _row(session, name)
            assert row.state == t.target.value, t
            if t.target in states.TERMINAL:
                assert row.finished_at is not None, t
            elif t.source in states.TERMINAL:  # resumed or retried: not finished now
                assert row.finished_at is None, t
            if t.source is RunState.PENDING:
                assert row.started_at is not None, t


def test_every_other_change_is_refused_and_nothing_written(
    sessions: sessionmaker[Session],
) -> None:
    refused = [
        (source, target)
        for source, target in itertools.product(RunState, RunState)
        if not allowed(source, target)
    ]
    assert (RunState.PENDING, RunState.SUCCEEDED) in refused
    assert (RunState.SUCCEEDED, RunState.CANCELLED) in refused
    for i, (source, target) in enumerate(refused):
        name = f"run/{i}"
        _run(sessions, name, source)
        with sessions.begin() as session, pytest.raises(RunStateError) as caught:
            change_run_state(_row(session, name), target)
        assert isinstance(caught.value, InputError)
        assert f"is {source}" in caught.value.message and str(target) in caught.value.message
        with sessions() as session:
            row = _row(session, name)
            assert row.state == source.value
            assert (row.finished_at is None) == (source not in states.TERMINAL)  # unchanged
