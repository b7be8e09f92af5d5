"""The campaign state machine: one table, one writer that checks and records history."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.campaign import states
from skybatch.campaign.models import (
    CampaignEventRow,
    CampaignGroupRow,
    CampaignRow,
    CampaignStepRow,
)
from skybatch.campaign.states import Action, Kind, State, StateConflict, allowed, change_state
from skybatch.db.state import open_state_db
from skybatch.errors import EXIT_USAGE
from skybatch.settings import load_settings


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return open_state_db(load_settings(home=tmp_path / "home"))


def _campaign(sessions: sessionmaker[Session], groups: int = 2) -> int:
    with sessions.begin() as session:
        row = CampaignRow(name="c", config={}, source_path="c.yaml", state="running")
        session.add(row)
        session.flush()
        step = CampaignStepRow(campaign_id=row.id, name="s1", position=0, state="running")
        session.add(step)
        session.flush()
        for i in range(groups):
            session.add(
                CampaignGroupRow(
                    campaign_id=row.id,
                    step_id=step.id,
                    name=f"g{i}",
                    position=i,
                    data_query="",
                    state="ready",
                    run_name=f"c/{row.id}/s1/g{i}",
                )
            )
        return row.id


def test_the_documented_table_is_the_table() -> None:
    doc = inspect.cleandoc(states.__doc__ or "")
    table = "\n".join("    " + line for line in states.state_table_text().splitlines())
    assert table in doc


def test_every_state_and_action_is_in_the_table() -> None:
    used = {t.source for t in states.TRANSITIONS} | {t.target for t in states.TRANSITIONS}
    assert used == set(State)
    assert {t.action for t in states.TRANSITIONS} == {None, *Action}
    for t in states.TRANSITIONS:
        assert allowed(t.kind, t.source, t.target, t.action)
    # Nothing leaves a terminal state; operators and the manager have their own rows.
    assert not [t for t in states.TRANSITIONS if t.source in states.TERMINAL]
    assert not allowed(Kind.GROUP, State.FAILED, State.READY)  # the manager cannot retry
    assert allowed(Kind.GROUP, State.FAILED, State.READY, Action.RETRY)


def test_change_state_records_one_event_per_row_in_the_same_transaction(
    sessions: sessionmaker[Session],
) -> None:
    campaign_id = _campaign(sessions)
    with sessions.begin() as session:
        groups = list(session.scalars(select(CampaignGroupRow).order_by(CampaignGroupRow.id)))
        change_state(session, groups, State.PAUSED, action=Action.PAUSE, reason="night")
        assert {g.state for g in groups} == {"paused"}
    with sessions() as session:
        events = list(session.scalars(select(CampaignEventRow).order_by(CampaignEventRow.id)))
        stored = set(session.scalars(select(CampaignGroupRow.state)))
    assert stored == {"paused"}
    assert [(e.what, e.from_state, e.to_state, e.actor, e.action, e.reason) for e in events] == [
        ("s1/g0", "ready", "paused", "operator", "pause", "night"),
        ("s1/g1", "ready", "paused", "operator", "pause", "night"),
    ]
    assert all(e.campaign_id == campaign_id and e.kind == "group" for e in events)


def test_a_change_the_table_does_not_allow_is_refused_and_writes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    _campaign(sessions)
    with pytest.raises(StateConflict) as caught, sessions.begin() as session:
        row = session.scalars(select(CampaignRow)).one()
        change_state(session, row, State.SUCCEEDED, action=Action.RESUME)
    assert caught.value.exit_code == EXIT_USAGE
    assert "`resume` cannot make it succeeded" in str(caught.value)
    with sessions() as session:
        assert session.scalars(select(CampaignRow.state)).one() == "running"
        assert session.scalars(select(CampaignEventRow)).all() == []


def test_a_row_changed_by_another_process_meanwhile_is_a_conflict(
    sessions: sessionmaker[Session],
) -> None:
    _campaign(sessions)
    with sessions() as stale:
        group = stale.scalars(select(CampaignGroupRow).where(CampaignGroupRow.name == "g0")).one()
        group_id = group.id
        with sessions.begin() as other:  # an operator cancels it meanwhile
            live = other.get(CampaignGroupRow, group_id)
            assert live is not None
            change_state(other, live, State.CANCELLED, action=Action.CANCEL)
        with pytest.raises(StateConflict, match="changed state"):
            change_state(stale, group, State.RUNNING)
        stale.rollback()
    with sessions() as session:
        assert session.get(CampaignGroupRow, group_id).state == "cancelled"  # type: ignore[union-attr]
        assert len(session.scalars(select(CampaignEventRow)).all()) == 1


def test_the_manager_runs_the_highest_priority_ready_group_first(tmp_path: Path) -> None:
    from skybatch.campaign.manager import Manager

    settings = load_settings(home=tmp_path / "home")
    manager = Manager(settings)
    sessions = manager.sessions
    low, high, paused = (_campaign(sessions, groups=2) for _ in range(3))
    with sessions.begin() as session:
        for step in session.scalars(select(CampaignStepRow)):
            step.priority = 10 if step.campaign_id == high else 0
        session.get(CampaignRow, paused).state = "paused"  # type: ignore[union-attr]
        for step in session.scalars(select(CampaignStepRow)):
            if step.campaign_id == paused:
                step.priority = 99

    def next_group() -> tuple[int, str]:
        group_id = manager._next_group()
        with sessions() as session:
            group = session.get(CampaignGroupRow, group_id)
            assert group is not None
            return group.campaign_id, group.name

    assert next_group() == (high, "g0")
    with sessions.begin() as session:
        for group in session.scalars(
            select(CampaignGroupRow).where(CampaignGroupRow.campaign_id == high)
        ):
            group.state = "succeeded"
    assert next_group() == (low, "g0")  # then submission order, then group order
