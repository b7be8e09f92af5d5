"""Campaign progress an operator can read: one line per campaign and step.

With many groups of many campaigns in flight in one manager, a scrolling bar per group
is unreadable. This module shows instead one line per active campaign and step (folded
here)::

    campaign 3 (hsc-rc2) step1  groups 12/24 done, 4 running, 8 waiting
        jobs 180/216 done, 2 running  3.1 quanta/s  ETA 0:00:12

It has four parts, each usable alone:

- :func:`read_progress` reads the counts in **two aggregate queries** over the state
  database (groups per step and state; jobs and quanta per step, summed with
  conditional aggregates), so its cost does not grow with rows loaded into Python:
  at 100,000 jobs in 1,000 groups it returns one small row per step and state.
- :class:`QuantaRate` turns successive "quanta done" readings into quanta per second
  over a sliding window (the last ~60 s), so a burst or a stall shows within a minute,
  and :func:`eta_seconds` the time the remaining quanta take at that rate.
- :func:`render_lines` formats the lines (``—`` where a rate or ETA is not known).
- :class:`ProgressDisplay` ties them together behind one ``update()`` that the
  manager's loop may call as often as it likes: the database is read and the lines
  redrawn at most every ``interval_s`` seconds. On a terminal the lines are redrawn in
  place (a rich ``Live`` region: other output printed through the same console goes
  above it); otherwise (CI logs) the lines whose counts changed are printed as plain
  lines at most every ``plain_interval_s`` seconds.

The clock is injected everywhere (``clock``, ``now``) so that rates and ETAs are
tested without sleeping.

A step's quanta total is known only for groups whose run has its jobs; the ETA counts
the groups not started yet at the mean quanta per started group of that step.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.engines.base import JobState
from skybatch.run.models import JobRow, RunRow

from .models import CampaignGroupRow, CampaignRow, CampaignStepRow
from .states import ACTIVE, State

__all__ = [
    "SHOWN_CAMPAIGN_STATES",
    "ProgressDisplay",
    "QuantaRate",
    "StepProgress",
    "eta_seconds",
    "format_eta",
    "format_rate",
    "read_progress",
    "render_line",
    "render_lines",
]

#: Campaigns shown: the ones the manager advances, and paused ones (their running
#: groups still finish).
SHOWN_CAMPAIGN_STATES = frozenset(ACTIVE | {State.PAUSED})

#: Job states counted as running: handed to the engine, or running in it.
_RUNNING_JOBS = (JobState.SUBMITTED.value, JobState.RUNNING.value)

#: Shown in place of a rate or an ETA that is not known.
UNKNOWN = "—"

#: A step's line shows its state instead of a rate and an ETA in these states.
_ENDED_STEP_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


@dataclass(frozen=True)
class StepProgress:
    """The counts of one step of one campaign, as :func:`read_progress` reads them."""

    campaign_id: int
    campaign: str
    campaign_state: str
    step: str
    step_state: str
    groups_total: int = 0
    groups_done: int = 0
    groups_running: int = 0
    #: Ready or paused: not started yet.
    groups_waiting: int = 0
    groups_failed: int = 0
    groups_cancelled: int = 0
    #: Groups whose run has jobs (the others' jobs and quanta are not known yet).
    groups_with_jobs: int = 0
    jobs_total: int = 0
    jobs_done: int = 0
    jobs_running: int = 0
    #: Out of retries: they wait for an operator.
    jobs_held: int = 0
    quanta_total: int = 0
    quanta_done: int = 0

    @property
    def key(self) -> tuple[int, str]:
        return (self.campaign_id, self.step)

    @property
    def quanta_remaining(self) -> int:
        """Quanta not done yet, counting groups without jobs at the mean quanta per
        group that has them (0 such groups: only the known quanta)."""
        known = self.quanta_total - self.quanta_done
        unknown_groups = self.groups_total - self.groups_with_jobs - self.groups_cancelled
        if unknown_groups <= 0 or self.groups_with_jobs == 0:
            return max(known, 0)
        per_group = self.quanta_total / self.groups_with_jobs
        return max(known + round(unknown_groups * per_group), 0)


def read_progress(sessions: sessionmaker[Session]) -> list[StepProgress]:
    """Every step of every shown campaign (:data:`SHOWN_CAMPAIGN_STATES`), in campaign
    then step order, with its group, job and quanta counts: two aggregate queries."""
    with sessions() as session:
        steps = _group_counts(session)
        jobs = _job_counts(session)
    return [
        StepProgress(**fields, **jobs.get(step_id, {}))  # type: ignore[arg-type]
        for step_id, fields in steps.items()
    ]


def _group_counts(session: Session) -> dict[int, dict[str, int | str]]:
    """Per step id (in display order): campaign and step names and states, group counts."""
    query = (
        select(
            CampaignRow.id,
            CampaignRow.name,
            CampaignRow.state,
            CampaignStepRow.id,
            CampaignStepRow.name,
            CampaignStepRow.state,
            CampaignGroupRow.state,
            func.count(CampaignGroupRow.id),
        )
        .join(CampaignStepRow, CampaignStepRow.campaign_id == CampaignRow.id)
        .outerjoin(CampaignGroupRow, CampaignGroupRow.step_id == CampaignStepRow.id)
        .where(CampaignRow.state.in_([s.value for s in SHOWN_CAMPAIGN_STATES]))
        .group_by(
            CampaignRow.id,
            CampaignRow.name,
            CampaignRow.state,
            CampaignStepRow.id,
            CampaignStepRow.name,
            CampaignStepRow.state,
            CampaignStepRow.position,
            CampaignGroupRow.state,
        )
        .order_by(CampaignRow.id, CampaignStepRow.position)
    )
    fields_of_state = {
        State.SUCCEEDED.value: "groups_done",
        State.RUNNING.value: "groups_running",
        State.READY.value: "groups_waiting",
        State.PAUSED.value: "groups_waiting",
        State.WAITING.value: "groups_waiting",
        State.FAILED.value: "groups_failed",
        State.CANCELLED.value: "groups_cancelled",
    }
    steps: dict[int, dict[str, int | str]] = {}
    for c_id, c_name, c_state, s_id, s_name, s_state, g_state, n in session.execute(query):
        step = steps.setdefault(
            s_id,
            {
                "campaign_id": c_id,
                "campaign": c_name,
                "campaign_state": c_state,
                "step": s_name,
                "step_state": s_state,
                "groups_total": 0,
            },
        )
        if g_state is None:  # the outer join's row of a step without groups
            continue
        step["groups_total"] = int(step["groups_total"]) + n
        name = fields_of_state.get(g_state)
        if name is not None:
            step[name] = int(step.get(name, 0)) + n
    return steps


def _job_counts(session: Session) -> dict[int, dict[str, int]]:
    """Per step id: jobs by state and quanta, summed over the runs of its groups."""

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    done = JobRow.state == JobState.SUCCEEDED.value
    query = (
        select(
            CampaignGroupRow.step_id,
            func.count(JobRow.run_id.distinct()),
            func.count(JobRow.id),
            count_if(done),
            count_if(JobRow.state.in_(_RUNNING_JOBS)),
            count_if(JobRow.state == JobState.HELD.value),
            func.coalesce(func.sum(JobRow.n_quanta), 0),
            func.coalesce(func.sum(case((done, JobRow.n_quanta), else_=0)), 0),
        )
        .select_from(CampaignRow)
        .join(CampaignGroupRow, CampaignGroupRow.campaign_id == CampaignRow.id)
        .join(RunRow, RunRow.name == CampaignGroupRow.run_name)
        .join(JobRow, JobRow.run_id == RunRow.id)
        .where(CampaignRow.state.in_([s.value for s in SHOWN_CAMPAIGN_STATES]))
        .group_by(CampaignGroupRow.step_id)
    )
    names = (
        "groups_with_jobs",
        "jobs_total",
        "jobs_done",
        "jobs_running",
        "jobs_held",
        "quanta_total",
        "quanta_done",
    )
    return {
        step_id: dict(zip(names, (int(v) for v in values), strict=True))
        for step_id, *values in session.execute(query)
    }


class QuantaRate:
    """Quanta per second over the last ``window_s`` seconds of readings.

    Each :meth:`add` is one reading of a step's quanta done at time ``now`` (any
    monotonic clock, in seconds). The rate spans from the newest reading at or before
    ``now - window_s`` (or the oldest kept) to the newest: a display that reads rarely
    still gets the mean over the gap. A count that goes down (a group's run started
    again from scratch) restarts the window.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        if self._samples and (done < self._samples[-1][1] or now < self._samples[-1][0]):
            self._samples.clear()
        self._samples.append((now, done))
        cutoff = now - self.window_s
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Quanta per second, or ``None`` before two readings apart in time."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return (d1 - d0) / (t1 - t0)


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until ``remaining`` quanta are done at ``rate``; ``None`` when unknown
    (no rate yet, or nothing finished within the window)."""
    if remaining <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return remaining / rate


def format_rate(rate: float | None) -> str:
    return f"{UNKNOWN if rate is None else f'{rate:.1f}'} quanta/s"


def format_eta(seconds: float | None) -> str:
    """``ETA H:MM:SS`` (``ETA 2 days, 3:04:05`` beyond a day), ``ETA —`` when unknown."""
    if seconds is None:
        return f"ETA {UNKNOWN}"
    return f"ETA {timedelta(seconds=round(seconds))}"


def _label(step: StepProgress) -> str:
    paused = "" if step.campaign_state != State.PAUSED else " [paused]"
    return f"campaign {step.campaign_id} ({step.campaign}){paused} {step.step}"


def _counts(step: StepProgress, rate: float | None) -> str:
    if step.groups_total == 0:
        return step.step_state  # waiting for its dependencies, or being expanded
    groups = f"groups {step.groups_done}/{step.groups_total} done"
    groups += f", {step.groups_running} running, {step.groups_waiting} waiting"
    for n, what in ((step.groups_failed, "failed"), (step.groups_cancelled, "cancelled")):
        if n:
            groups += f", {n} {what}"
    jobs = f"jobs {step.jobs_done}/{step.jobs_total} done, {step.jobs_running} running"
    if step.jobs_held:
        jobs += f", {step.jobs_held} held"
    if step.step_state in _ENDED_STEP_STATES:
        return f"{groups}  {jobs}  {step.step_state}"
    eta = eta_seconds(step.quanta_remaining, rate)
    return f"{groups}  {jobs}  {format_rate(rate)}  {format_eta(eta)}"


def render_line(step: StepProgress, rate: float | None, label_width: int = 0) -> str:
    """One step's line; ``label_width`` pads the campaign and step so columns align."""
    return f"{_label(step):<{label_width}}  {_counts(step, rate)}"


def render_lines(
    steps: Sequence[StepProgress], rates: dict[tuple[int, str], float | None] | None = None
) -> list[str]:
    """The lines of ``steps`` (rates by :attr:`StepProgress.key`, unknown if missing)."""
    rates = rates or {}
    width = max((len(_label(s)) for s in steps), default=0)
    return [render_line(s, rates.get(s.key), width) for s in steps]


@dataclass
class _Shown:
    """What the plain (non-terminal) output last printed of a step."""

    counts: dict[tuple[int, str], StepProgress] = field(default_factory=dict)
    at: float | None = None


class ProgressDisplay:
    """The progress lines, redrawn by :meth:`update` at most every ``interval_s``.

    On a terminal (``console.is_terminal``) the lines are redrawn in place; otherwise
    the lines whose counts changed are printed at most every ``plain_interval_s``.
    Use it as a context manager (or call :meth:`close`): the last lines are drawn once
    more at the end. ``reader`` stands in for :func:`read_progress` (tests);
    ``clock`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        console: Console | None = None,
        interval_s: float = 2.0,
        plain_interval_s: float = 10.0,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        reader: Callable[[sessionmaker[Session]], list[StepProgress]] = read_progress,
    ) -> None:
        self.sessions = sessions
        self.console = console or Console()
        self.interval_s = interval_s
        self.plain_interval_s = plain_interval_s
        self.window_s = window_s
        self.clock = clock
        self.reader = reader
        self.live = self.console.is_terminal
        self.lines: list[str] = []
        self._rates: dict[tuple[int, str], QuantaRate] = {}
        self._read_at: float | None = None
        self._shown = _Shown()
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, force: bool = False) -> bool:
        """Read and redraw if ``interval_s`` passed since the last read (or ``force``);
        ``True`` when it read the database."""
        now = self.clock()
        if not force and self._read_at is not None and now - self._read_at < self.interval_s:
            return False
        self._read_at = now
        steps = self.reader(self.sessions)
        rates = self._track(steps, now)
        self.lines = render_lines(steps, rates)
        if self.live:
            self._draw_live()
        else:
            self._print_changed(steps, now, force)
        return True

    def close(self) -> None:
        """Draw the lines once more, then leave them on the terminal."""
        self.update(force=True)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _track(
        self, steps: Iterable[StepProgress], now: float
    ) -> dict[tuple[int, str], float | None]:
        """Feed each step's quanta done to its rate window; forget steps not shown."""
        rates: dict[tuple[int, str], float | None] = {}
        for step in steps:
            tracker = self._rates.get(step.key)
            if tracker is None:
                tracker = self._rates[step.key] = QuantaRate(self.window_s)
            tracker.add(now, step.quanta_done)
            rates[step.key] = tracker.rate
        for key in set(self._rates) - set(rates):
            del self._rates[key]
        return rates

    def _draw_live(self) -> None:
        text = Text("\n".join(self.lines), no_wrap=True, overflow="ellipsis")
        if self._live is None:
            self._live = Live(text, console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(text, refresh=True)

    def _print_changed(self, steps: Sequence[StepProgress], now: float, force: bool) -> None:
        shown = self._shown
        if not force and shown.at is not None and now - shown.at < self.plain_interval_s:
            return
        changed = [
            line
            for step, line in zip(steps, self.lines, strict=True)
            if shown.counts.get(step.key) != step
        ]
        shown.counts = {step.key: step for step in steps}
        if not changed:
            return
        shown.at = now
        for line in changed:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
