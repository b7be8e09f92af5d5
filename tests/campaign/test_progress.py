"""Campaign progress lines: counts read from a real SQLite state database, rates and ETAs
on an injected clock (no sleeps), and what a terminal and a log file are shown."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import event, insert, update
from sqlalchemy.orm import Session, sessionmaker

from skybatch.campaign.models import CampaignGroupRow, CampaignRow, CampaignStepRow
from skybatch.campaign.progress import (
    ProgressDisplay,
    QuantaRate,
    StepProgress,
    eta_seconds,
    format_eta,
    format_rate,
    read_progress,
    render_line,
    render_lines,
)
from skybatch.db.state import open_state_db
from skybatch.run.models import JobRow, RunRow
from skybatch.settings import load_settings

#: A group: its state and its run's jobs as ``(state, n_quanta)`` (``None``: no run yet).
Group = tuple[str, Sequence[tuple[str, int]] | None]


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return open_state_db(load_settings(home=tmp_path / "home"))


def _campaign(
    sessions: sessionmaker[Session],
    name: str,
    state: str,
    steps: dict[str, tuple[str, Sequence[Group]]],
) -> int:
    """A campaign with its steps, groups, runs and jobs, inserted in bulk (core inserts:
    the large test inserts 100,000 jobs)."""
    with sessions.begin() as session:
        campaign = CampaignRow(name=name, config={}, source_path=f"{name}.yaml", state=state)
        session.add(campaign)
        session.flush()
        for position, (step_name, (step_state, groups)) in enumerate(steps.items()):
            step = CampaignStepRow(
                campaign_id=campaign.id, name=step_name, position=position, state=step_state
            )
            session.add(step)
            session.flush()
            runs = [f"{name}/{campaign.id}/{step_name}/g{i}" for i in range(len(groups))]
            if not groups:
                continue
            session.execute(
                insert(CampaignGroupRow),
                [
                    {
                        "campaign_id": campaign.id,
                        "step_id": step.id,
                        "name": f"g{i}",
                        "position": i,
                        "data_query": "",
                        "state": group_state,
                        "run_name": run,
                    }
                    for i, ((group_state, _), run) in enumerate(zip(groups, runs, strict=True))
                ],
            )
            started = [(run, jobs) for (_, jobs), run in zip(groups, runs, strict=True) if jobs]
            if not started:
                continue
            session.execute(
                insert(RunRow),
                [
                    {"name": run, "repo": "r", "pipeline": "p", "workdir": "/nowhere"}
                    for run, _ in started
                ],
            )
            ids = dict(
                session.execute(
                    RunRow.__table__.select()
                    .with_only_columns(RunRow.name, RunRow.id)
                    .where(RunRow.name.in_([run for run, _ in started]))
                ).all()
            )
            session.execute(
                insert(JobRow),
                [
                    {
                        "run_id": ids[run],
                        "name": f"j{j}",
                        "label": "t",
                        "state": job_state,
                        "memory_mb": 1024,
                        "walltime_s": 600,
                        "n_quanta": n_quanta,
                    }
                    for run, jobs in started
                    for j, (job_state, n_quanta) in enumerate(jobs)
                ],
            )
        return campaign.id


@contextmanager
def _statements(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """The SQL statements run on the state database inside the block."""
    seen: list[str] = []
    engine = sessions.kw["bind"]

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _step(**fields: Any) -> StepProgress:
    base: dict[str, Any] = {
        "campaign_id": 3,
        "campaign": "hsc-rc2",
        "campaign_state": "running",
        "step": "step1",
        "step_state": "running",
    }
    return StepProgress(**(base | fields))


# -- counts -------------------------------------------------------------------------


def test_counts_per_campaign_and_step(sessions: sessionmaker[Session]) -> None:
    mixed = [
        ("succeeded", 2),
        ("succeeded", 3),
        ("running", 1),
        ("submitted", 1),
        ("pending", 4),
        ("ready", 1),
        ("held", 2),
        ("failed", 1),
    ]
    first = _campaign(
        sessions,
        "rc2",
        "running",
        {
            "step1": (
                "running",
                [
                    ("succeeded", [("succeeded", 2), ("succeeded", 1)]),
                    ("running", mixed),
                    ("running", None),  # started, being expanded: no jobs yet
                    ("ready", None),
                    ("paused", None),
                    ("failed", [("held", 5), ("succeeded", 1)]),
                    ("cancelled", None),
                ],
            ),
            "step2": ("waiting", []),
        },
    )
    _campaign(
        sessions, "over", "succeeded", {"s": ("succeeded", [("succeeded", [("succeeded", 9)])])}
    )
    paused = _campaign(
        sessions, "held", "paused", {"s": ("running", [("running", [("running", 1)])])}
    )
    with sessions.begin() as session:  # a run of no campaign (skybatch run) is not counted
        run = RunRow(name="alone", repo="r", pipeline="p", workdir="/nowhere")
        session.add(run)
        session.flush()
        session.add(
            JobRow(run_id=run.id, name="j", label="t", state="running", memory_mb=1, walltime_s=1)
        )

    with _statements(sessions) as statements:
        steps = read_progress(sessions)
    assert len(statements) == 2  # two aggregate queries, whatever the number of rows

    assert [s.key for s in steps] == [(first, "step1"), (first, "step2"), (paused, "s")]
    assert steps[0] == StepProgress(
        campaign_id=first,
        campaign="rc2",
        campaign_state="running",
        step="step1",
        step_state="running",
        groups_total=7,
        groups_done=1,
        groups_running=2,
        groups_waiting=2,
        groups_failed=1,
        groups_cancelled=1,
        groups_with_jobs=3,
        jobs_total=2 + 8 + 2,
        jobs_done=2 + 2 + 1,
        jobs_running=2,
        jobs_held=1 + 1,
        quanta_total=3 + 15 + 6,
        quanta_done=3 + 5 + 1,
    )
    assert steps[1] == StepProgress(
        campaign_id=first,
        campaign="rc2",
        campaign_state="running",
        step="step2",
        step_state="waiting",
    )
    assert (steps[2].campaign_state, steps[2].groups_running, steps[2].jobs_running) == (
        "paused",
        1,
        1,
    )


def test_counts_at_100000_jobs_in_1000_groups(sessions: sessionmaker[Session]) -> None:
    """The aggregate queries give the same numbers as counting the rows one by one
    (the time is printed by hand in the report, not asserted)."""

    def job(group: int, j: int, group_state: str) -> tuple[str, int]:
        n_quanta = 1 + (group + j) % 3
        if group_state == "succeeded" or (group_state == "failed" and j > 0):
            return "succeeded", n_quanta
        if group_state == "failed":
            return "held", n_quanta
        states = ["succeeded"] * 60 + ["running"] * 4 + ["submitted"] * 2 + ["pending"] * 34
        return states[j], n_quanta

    pattern = ["succeeded"] * 6 + ["running"] * 2 + ["ready", "failed"]
    steps: dict[str, tuple[str, list[Group]]] = {"step1": ("running", []), "step2": ("running", [])}
    for group in range(1000):
        state = pattern[group // 2 % 10]  # both steps get every state
        jobs = None if state == "ready" else [job(group, j, state) for j in range(100)]
        steps[f"step{1 + group % 2}"][1].append((state, jobs))
    campaign = _campaign(sessions, "big", "running", steps)
    _campaign(
        sessions,
        "old",
        "succeeded",
        {"s": ("succeeded", [("succeeded", [("succeeded", 1)] * 100)] * 100)},
    )

    with _statements(sessions) as statements:
        got = read_progress(sessions)
    assert len(statements) == 2

    expected = []
    for name, (step_state, groups) in steps.items():
        jobs = [j for _, js in groups for j in js or []]
        expected.append(
            StepProgress(
                campaign_id=campaign,
                campaign="big",
                campaign_state="running",
                step=name,
                step_state=step_state,
                groups_total=len(groups),
                groups_done=sum(s == "succeeded" for s, _ in groups),
                groups_running=sum(s == "running" for s, _ in groups),
                groups_waiting=sum(s == "ready" for s, _ in groups),
                groups_failed=sum(s == "failed" for s, _ in groups),
                groups_with_jobs=sum(js is not None for _, js in groups),
                jobs_total=len(jobs),
                jobs_done=sum(s == "succeeded" for s, _ in jobs),
                jobs_running=sum(s in ("running", "submitted") for s, _ in jobs),
                jobs_held=sum(s == "held" for s, _ in jobs),
                quanta_total=sum(q for _, q in jobs),
                quanta_done=sum(q for s, q in jobs if s == "succeeded"),
            )
        )
    assert got == expected
    assert sum(s.jobs_total for s in got) == 90_000  # with the old campaign's 10,000: 100,000
    step1 = got[0]
    assert (step1.groups_done, step1.groups_running, step1.groups_waiting) == (300, 100, 50)
    assert (step1.groups_failed, step1.groups_with_jobs) == (50, 450)
    assert (step1.jobs_total, step1.jobs_running, step1.jobs_held) == (45_000, 600, 50)


# -- rates and ETA ------------------------------------------------------------------


def test_rate_over_a_sliding_window() -> None:
    rate = QuantaRate(window_s=60)
    assert rate.rate is None
    rate.add(0, 0)
    assert rate.rate is None  # one reading: no rate yet
    rate.add(10, 30)
    assert rate.rate == 3.0
    for t in range(20, 101, 10):  # 3/s until t=60, then 1/s
        rate.add(t, 3 * t if t <= 60 else 180 + (t - 60))
    # The window reaches back to the newest reading at or before t=40.
    assert rate.rate == pytest.approx((220 - 120) / (100 - 40))
    rate.add(200, 220)  # nothing finished for 100 s: the window covers the stall
    assert rate.rate == 0.0


def test_rate_restarts_when_the_count_goes_down() -> None:
    rate = QuantaRate(window_s=60)
    rate.add(0, 50)
    rate.add(10, 80)
    rate.add(20, 5)
    assert rate.rate is None
    rate.add(25, 15)
    assert rate.rate == 2.0


def test_eta_and_formats() -> None:
    assert eta_seconds(36, 3.0) == 12.0
    assert eta_seconds(36, None) is None
    assert eta_seconds(36, 0.0) is None  # stalled: unknown
    assert eta_seconds(0, None) == 0.0
    assert format_eta(11.6) == "ETA 0:00:12"
    assert format_eta(None) == "ETA —"
    assert format_eta(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "ETA 2 days, 3:04:05"
    assert format_rate(3.14) == "3.1 quanta/s"
    assert format_rate(None) == "— quanta/s"


def test_remaining_quanta_count_groups_without_jobs_at_the_mean() -> None:
    step = _step(
        groups_total=10, groups_with_jobs=4, groups_cancelled=2, quanta_total=40, quanta_done=30
    )
    assert step.quanta_remaining == 10 + 4 * 10
    assert _step(quanta_total=40, quanta_done=30).quanta_remaining == 10


# -- lines --------------------------------------------------------------------------


def test_the_line() -> None:
    step = _step(
        groups_total=24,
        groups_done=12,
        groups_running=4,
        groups_waiting=8,
        groups_with_jobs=24,
        jobs_total=216,
        jobs_done=180,
        jobs_running=2,
        quanta_total=216,
        quanta_done=180,
    )
    assert render_line(step, 3.1) == (
        "campaign 3 (hsc-rc2) step1  groups 12/24 done, 4 running, 8 waiting  "
        "jobs 180/216 done, 2 running  3.1 quanta/s  ETA 0:00:12"
    )
    assert render_line(step, None).endswith("  — quanta/s  ETA —")
    failing = _step(
        campaign_state="paused",
        step_state="failed",
        groups_total=2,
        groups_done=1,
        groups_failed=1,
        jobs_total=4,
        jobs_done=3,
        jobs_held=1,
    )
    assert render_line(failing, 1.0) == (
        "campaign 3 (hsc-rc2) [paused] step1  groups 1/2 done, 0 running, 0 waiting, 1 failed  "
        "jobs 3/4 done, 0 running, 1 held  failed"
    )
    assert render_line(_step(step="step2", step_state="waiting"), None) == (
        "campaign 3 (hsc-rc2) step2  waiting"
    )


def test_lines_align_their_counts() -> None:
    lines = render_lines(
        [_step(step="s", step_state="waiting"), _step(step="step10", step_state="ready")]
    )
    assert lines == ["campaign 3 (hsc-rc2) s       waiting", "campaign 3 (hsc-rc2) step10  ready"]


# -- display ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _finish_jobs(sessions: sessionmaker[Session], n: int) -> None:
    """Mark ``n`` more pending jobs succeeded."""
    with sessions.begin() as session:
        ids = session.scalars(
            JobRow.__table__.select()
            .with_only_columns(JobRow.id)
            .where(JobRow.state == "pending")
            .limit(n)
        ).all()
        session.execute(update(JobRow).where(JobRow.id.in_(ids)).values(state="succeeded"))


def _running_campaign(sessions: sessionmaker[Session]) -> int:
    groups: list[Group] = [("running", [("pending", 1)] * 50), ("ready", None)]
    return _campaign(
        sessions, "rc2", "running", {"step1": ("running", groups), "step2": ("waiting", [])}
    )


def test_plain_output_prints_changed_lines_every_10_seconds(
    sessions: sessionmaker[Session],
) -> None:
    _running_campaign(sessions)
    out = io.StringIO()
    clock = FakeClock()
    display = ProgressDisplay(
        sessions,
        console=Console(file=out, force_terminal=False, width=40),
        clock=clock,
        interval_s=2,
    )
    assert not display.live
    assert display.update()
    first = out.getvalue().splitlines()
    assert first == [
        "campaign 1 (rc2) step1  groups 0/2 done, 1 running, 1 waiting  jobs 0/50 done, 0 running  "
        "— quanta/s  ETA —",
        "campaign 1 (rc2) step2  waiting",
    ]  # one line each however narrow the console

    clock.now = 1.0
    with _statements(sessions) as statements:
        assert not display.update()  # within interval_s: nothing read
    assert statements == []

    _finish_jobs(sessions, 10)
    clock.now = 5.0
    assert display.update()  # read (the rate window gets its reading) but not printed yet
    assert out.getvalue().splitlines() == first

    _finish_jobs(sessions, 10)
    clock.now = 10.0
    display.update()
    printed = out.getvalue().splitlines()[len(first) :]
    # Only the changed line; 20 quanta in 10 s; 30 known + 50 for the group not started.
    assert printed == [
        "campaign 1 (rc2) step1  groups 0/2 done, 1 running, 1 waiting  "
        "jobs 20/50 done, 0 running  2.0 quanta/s  ETA 0:00:40"
    ]

    clock.now = 30.0
    display.update()  # nothing changed: nothing printed
    assert len(out.getvalue().splitlines()) == len(first) + 1

    _finish_jobs(sessions, 5)
    clock.now = 31.0
    display.close()  # the end: the last counts, at once
    assert (
        out.getvalue()
        .splitlines()[-1]
        .startswith(
            "campaign 1 (rc2) step1  groups 0/2 done, 1 running, 1 waiting  jobs 25/50 done"
        )
    )


def test_terminal_redraws_the_lines_in_place(sessions: sessionmaker[Session]) -> None:
    _running_campaign(sessions)
    out = io.StringIO()
    clock = FakeClock()
    console = Console(file=out, force_terminal=True, width=60, color_system=None)
    with ProgressDisplay(sessions, console=console, clock=clock, interval_s=2) as display:
        assert display.live
        display.update()
        drawn = out.getvalue()
        assert "campaign 1 (rc2) step1  groups 0/2 done" in drawn
        assert "\x1b[1A" not in drawn  # first draw: nothing to go back over

        _finish_jobs(sessions, 20)
        clock.now = 4.0
        display.update()  # redrawn at once on a terminal (no 10 s rule)
        redraw = out.getvalue()[len(drawn) :]
        assert "\x1b[1A" in redraw and "\x1b[2K" in redraw  # cursor up, erase line: in place
        assert "jobs 20/50 done" in display.lines[0]
        # Each line cut to the terminal's width instead of wrapping onto the next.
        visible = _screen(redraw)
        assert len(visible) == 2 and all(len(line) <= 60 for line in visible)
        assert visible[0].endswith("…")


def _screen(output: str) -> list[str]:
    """The text lines of the last redraw, control sequences removed."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).replace("\r", "")
    return [line for line in text.splitlines() if line]
