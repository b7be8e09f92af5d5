"""The campaign manager (seed steps 3, 13): advances every campaign's state machine.

One **pass** repeats, until nothing more can happen:

1. **advance** each active campaign in one transaction: a waiting campaign starts; a
   step whose dependencies succeeded becomes ready; a running step whose groups all
   ended succeeds (or fails if one failed); the campaign succeeds when every step
   did, and fails when a step failed and no other step can go on;
2. **expand** each ready step into groups (:mod:`skybatch.campaign.expansion`, which
   reads the Butler, so outside any transaction), then store the groups and the
   step's new state in one transaction;
3. **run** ready groups, highest step priority first, then the campaign's priority,
   then submission order: mark each running (committed) and hand its run to the
   manager's **execution pool** (:mod:`skybatch.run.pool`): one engine (one set of
   warm workers, one set of Slurm pilots) and one scheduler loop serve every group in
   flight, across steps and campaigns, while the groups' set-ups and finishes run
   in a bookkeeping process beside it. Up to ``max_running_groups`` groups per step
   and ``max_groups`` per manager are in flight; a campaign's
   ``max_running_jobs`` caps its jobs in the engine over all its groups; campaigns
   of equal priority share the engine's slots. A paused campaign's groups in flight
   get no new job (those in the engine run to their end) and continue on resume; a
   cancelled group's jobs are cancelled in the engine within a quarter second.

Stand-ins (tests, the ``manager_scale`` benchmark) inject the pool (a ``pool``
factory: bookkeeping that writes the runs' rows without a Butler, an instant engine),
so groups go through the same pass; an injected ``executor`` instead runs groups one
at a time through it, each to its end.

Then campaigns that ended (succeeded or cancelled) are cleaned up
(:mod:`skybatch.campaign.cleanup`). Groups found ``running`` when a manager starts
were left by a manager that was killed (or a ``--once`` pass that ended with paused
groups in flight): they are taken up first (their runs resumed, or set up again if
they were killed during their set-up).

Only one manager runs per skybatch home (:func:`skybatch.campaign.lock.manager_lock`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from skybatch.db.models import utcnow
from skybatch.db.state import open_state_db
from skybatch.engines.registry import EngineRegistry
from skybatch.errors import InputError, SkybatchError
from skybatch.run.pool import ExecutionPool, PoolRun, RunOutcome
from skybatch.settings import Settings

from .cleanup import cleanup_campaign, format_cleanup
from .config import Campaign, Step
from .execute import GroupExecutor, GroupOutcome, group_run_options, run_group
from .expansion import StepExpansion, expand_step
from .models import CampaignGroupRow, CampaignRow, CampaignStepRow
from .states import ACTIVE, State, StateConflict, change_state
from .submit import campaign_from_row, run_name

__all__ = [
    "DEFAULT_MAX_GROUPS",
    "Manager",
    "PassReport",
    "PoolFactory",
    "StepExpander",
]

#: Groups one manager has in flight at most (``skybatch manager run --max-groups``).
DEFAULT_MAX_GROUPS = 64
#: Seconds between advances of the campaigns' state machines while nothing ended.
ADVANCE_S = 2.0
#: Seconds between looks at operators' pauses and cancellations of groups in flight.
CONTROL_S = 0.25

_log = logging.getLogger(__name__)

#: ``expander(campaign, step, runs_of)`` gives a step's groups (``runs_of[step]``: the
#: output runs of a step's groups); :func:`~skybatch.campaign.expansion.expand_step`
#: reads the Butler.
StepExpander = Callable[[Campaign, Step, Mapping[str, Sequence[str]]], StepExpansion]

#: ``factory(settings)`` makes the manager's execution pool (by default
#: :class:`~skybatch.run.pool.ExecutionPool` with the real bookkeeping and engines).
PoolFactory = Callable[[Settings], ExecutionPool]


@dataclass
class PassReport:
    """What one pass did."""

    groups_run: int = 0
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    changed: bool = False
    #: Campaigns that failed during this pass: ``(id, name, why)``.
    failed_campaigns: list[tuple[int, str, str]] = field(default_factory=list)


class Manager:
    """Advances campaigns; see the module. ``say`` receives one line per event.

    ``pool`` makes the execution pool groups run in and ``expander`` expands a step
    into groups; the defaults are the real ones (:class:`~skybatch.run.pool.ExecutionPool`
    with the driver's set-ups and finishes and the registry's engines,
    :func:`~skybatch.campaign.expansion.expand_step` from the Butler). Stand-ins drive
    the same state machines without a Butler (tests, the ``manager_scale``
    benchmark). An ``executor`` other than :func:`~skybatch.campaign.execute.run_group`
    runs each group through it, one at a time, instead of the pool."""

    def __init__(
        self,
        settings: Settings,
        *,
        say: Callable[[str], None] | None = None,
        executor: GroupExecutor = run_group,
        expander: StepExpander = expand_step,
        max_groups: int = DEFAULT_MAX_GROUPS,
        progress: Callable[[], object] | None = None,
        pool: PoolFactory = ExecutionPool,
    ) -> None:
        self.settings = settings
        self.sessions = open_state_db(settings)
        self.say = say or (lambda text: _log.info("%s", text))
        self.executor = executor
        self.expander = expander
        self._campaigns: dict[int, Campaign] = {}
        self._orphans: set[int] | None = None
        self._cleanup_failed: set[int] = set()
        self._report = PassReport()
        self._failing: list[tuple[int, str, str]] = []  # until the transaction commits
        #: Groups in flight at most; ``progress()`` is called every loop of a pass.
        self.max_groups = max_groups
        self.progress = progress
        self._make_pool = pool
        self._registry = EngineRegistry.default()  # what its entry points are: found once
        self._pool: ExecutionPool | None = None
        self._flights: dict[int, _Flight] = {}

    @property
    def pool(self) -> ExecutionPool:
        """The manager's execution pool (made on first use)."""
        if self._pool is None:
            self._pool = self._make_pool(self.settings)
        return self._pool

    def close(self) -> None:
        """Close the execution pool: its engines' workers end. Groups still in flight
        stay ``running`` and are taken up by the next pass or manager."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._flights.clear()
        self._orphans = None  # what is in flight is found again by the next pass

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- passes -----------------------------------------------------------------
    def run_pass(self) -> PassReport:
        """Advance and run every campaign until nothing more can happen now."""
        report = self._report = PassReport()
        if self._orphans is None and not self._flights:
            with self.sessions() as session:
                self._orphans = set(
                    session.scalars(
                        select(CampaignGroupRow.id).where(
                            CampaignGroupRow.state == State.RUNNING.value
                        )
                    )
                )
        if self.executor is run_group:
            self._pool_pass(report)
        else:
            self._serial_pass(report)
        self._cleanup_ended()
        return report

    def _serial_pass(self, report: PassReport) -> None:
        while True:
            changed = self._advance_all()
            group_id = self._next_group()
            if group_id is not None:
                self._run(group_id, report)
                report.changed = True
                continue
            report.changed |= changed
            if not changed:
                break

    def _pool_pass(self, report: PassReport) -> None:
        """Advance campaigns, start groups into the pool and drive it until nothing
        more can happen now: no group in flight and nothing to start, or only groups
        of paused campaigns left with nothing of theirs in the engine (those stay
        in flight, ``running``, and continue when their campaign is resumed)."""
        pool = self.pool
        advance, last_advance, last_control = True, 0.0, 0.0
        paused: set[int] = set()
        while True:
            now = time.monotonic()
            advanced = False
            # Groups become ready, or slots free, only when something happened (or an
            # operator acted: seen every ADVANCE_S): the queries for ready groups are
            # made then, not at every turn of the loop.
            look = advance or now - last_advance >= ADVANCE_S
            if look:
                advanced = self._advance_all()
                report.changed |= advanced
                last_advance = now
            if now - last_control >= CONTROL_S:
                paused = self._control()
                last_control = now
            started = self._start_groups(look=look)
            changed = pool.tick(paused)
            ended = pool.outcomes()
            for outcome in ended:
                self._record(outcome, report)
            advance = bool(ended or started or advanced)
            if self.progress is not None:
                self.progress()
            if not self._flights and not advance:
                return
            if self._flights and pool.stalled(paused) and not advance:
                return
            if not (changed or advance):
                pool.wait(0.02)

    def _control(self) -> set[int]:
        """Campaigns of groups in flight that are paused (no new jobs for them); groups
        in flight that an operator cancelled are stopped in the pool."""
        if not self._flights:
            return set()
        with self.sessions() as session:
            campaigns = {f.campaign_id for f in self._flights.values()}
            paused = set(
                session.scalars(
                    select(CampaignRow.id).where(
                        CampaignRow.id.in_(campaigns), CampaignRow.state == State.PAUSED.value
                    )
                )
            )
            stopped = list(
                session.scalars(
                    select(CampaignGroupRow.id).where(
                        CampaignGroupRow.id.in_(list(self._flights)),
                        CampaignGroupRow.state != State.RUNNING.value,
                    )
                )
            )
        for group_id in stopped:
            self.pool.stop(group_id)
        return paused

    def _start_groups(self, *, look: bool = True) -> bool:
        """Hand the next groups to the pool (orphans of a killed manager first), within
        ``max_groups`` and each step's ``max_running_groups`` (ready groups only if
        ``look``); returns whether any."""
        orphans = sorted(self._orphans or ())
        started = False
        for group_id in orphans:
            self._orphans.discard(group_id)  # type: ignore[union-attr]
            started |= self._hand_over(group_id, orphan=True)
        room = self.max_groups - len(self._flights)
        if room > 0 and look:
            for group_id in self._startable(room):
                started |= self._hand_over(group_id, orphan=False)
        return started

    def _startable(self, room: int) -> list[int]:
        """Up to ``room`` ready groups to start, by step priority, then campaign
        priority; campaigns of equal priority take turns; then submission order."""
        in_step: dict[int, int] = {}
        for flight in self._flights.values():
            in_step[flight.step_id] = in_step.get(flight.step_id, 0) + 1
        with self.sessions() as session:
            steps = session.execute(
                select(CampaignStepRow, CampaignRow)
                .join(CampaignRow, CampaignRow.id == CampaignStepRow.campaign_id)
                .where(
                    CampaignStepRow.state == State.RUNNING.value,
                    CampaignRow.state == State.RUNNING.value,
                )
                .order_by(
                    CampaignStepRow.priority.desc(),
                    CampaignRow.priority.desc(),
                    CampaignRow.id,
                    CampaignStepRow.position,
                )
            ).all()
            levels: dict[tuple[int, int], dict[int, list[int]]] = {}
            for step, row in steps:
                config = self._campaign(row).policies_for(step.name).concurrency
                limit = config.max_running_groups or room
                free = min(room, limit - in_step.get(step.id, 0))
                if free <= 0:
                    continue
                ids = list(
                    session.scalars(
                        select(CampaignGroupRow.id)
                        .where(
                            CampaignGroupRow.step_id == step.id,
                            CampaignGroupRow.state == State.READY.value,
                        )
                        .order_by(CampaignGroupRow.position)
                        .limit(free)
                    )
                )
                level = levels.setdefault((step.priority, row.priority), {})
                level.setdefault(row.id, []).extend(ids)
        chosen: list[int] = []
        for level in levels.values():  # highest priority first (dicts keep order)
            queues = [q for q in level.values() if q]
            while queues and len(chosen) < room:
                for queue in queues:  # campaigns of equal priority take turns
                    if queue and len(chosen) < room:
                        chosen.append(queue.pop(0))
                queues = [q for q in queues if q]
        return chosen

    def _hand_over(self, group_id: int, *, orphan: bool) -> bool:
        try:
            started = self._start(group_id, orphan)
        except StateConflict as exc:
            _log.info("group %d changed before it could start: %s", group_id, exc)
            return False
        if started is None:
            return False
        label, options, flight = started
        self.say(f"{label}: {'resuming' if orphan else 'starting'} run {options.output_run}")
        self._flights[group_id] = flight
        self.pool.add(
            PoolRun(
                group_id,
                options,
                share=flight.campaign_id,
                priority=flight.priority,
                share_limit=options.max_running_jobs,
                after_restart=orphan,
                engine_workers=flight.engine_workers,
            )
        )
        return True

    def _record(self, outcome: RunOutcome, report: PassReport) -> None:
        flight = self._flights.pop(int(outcome.key))  # type: ignore[call-overload]
        self._conclude(
            flight.group_id,
            flight.label,
            GroupOutcome(outcome.state, outcome.message, outcome.resumed),
            report,
        )

    def run_forever(self, poll_s: float = 10.0) -> None:
        """Passes every ``poll_s`` seconds until interrupted; an error of one pass (a
        database that went away, say) is reported and the next pass tries again."""
        while True:
            try:
                self.run_pass()
            except SkybatchError as exc:
                self.say(f"manager pass failed: {exc}; trying again in {poll_s:g} s")
            time.sleep(poll_s)

    def run_until_done(self, campaign_id: int, poll_s: float = 0.5) -> str:
        """Passes until the campaign is no longer active; returns its state."""
        while True:
            report = self.run_pass()
            state = self.state_of(campaign_id)
            if state not in ACTIVE:
                return state
            if not report.changed:
                time.sleep(poll_s)

    def state_of(self, campaign_id: int) -> str:
        with self.sessions() as session:
            state = session.scalar(select(CampaignRow.state).where(CampaignRow.id == campaign_id))
        if state is None:
            raise InputError(f"no campaign with id {campaign_id}", where=str(campaign_id))
        return state

    # -- advancing --------------------------------------------------------------
    def _campaign(self, row: CampaignRow) -> Campaign:
        if row.id not in self._campaigns:
            self._campaigns[row.id] = campaign_from_row(row)
        return self._campaigns[row.id]

    def _advance_all(self) -> bool:
        with self.sessions() as session:
            ids = list(
                session.scalars(
                    select(CampaignRow.id)
                    .where(CampaignRow.state.in_([s.value for s in ACTIVE]))
                    .order_by(CampaignRow.id)
                )
            )
        changed = False
        for campaign_id in ids:
            try:
                changed |= self._advance(campaign_id)
            except StateConflict as exc:  # an operator acted meanwhile: read again
                _log.info("campaign %d changed while advancing it: %s", campaign_id, exc)
                changed = True
        return changed

    def _advance(self, campaign_id: int) -> bool:
        changed = False
        ready: list[int] = []
        self._failing = []
        with self.sessions.begin() as session:
            row = session.get(CampaignRow, campaign_id)
            if row is None or row.state not in ACTIVE:
                return False
            campaign = self._campaign(row)
            if row.state == State.WAITING:
                change_state(session, row, State.RUNNING, reason="picked up by the manager")
                self.say(f"campaign {row.id} ({row.name}) started")
                changed = True
            steps = _steps(session, campaign_id)
            counts = _group_counts(session, campaign_id)
            by_name = {s.name: s for s in steps}
            for step in steps:
                depends_on = campaign.step(step.name).depends_on
                if step.state == State.WAITING and all(
                    by_name[d].state == State.SUCCEEDED for d in depends_on
                ):
                    reason = "dependencies succeeded: " + (", ".join(depends_on) or "none")
                    change_state(session, step, State.READY, reason=reason)
                    changed = True
                if step.state == State.READY:
                    ready.append(step.id)
                elif step.state == State.RUNNING:
                    changed |= self._finish_step(session, row, step, counts.get(step.id, {}))
            changed |= self._finish_campaign(session, row, steps, bool(ready))
        self._report.failed_campaigns += self._failing
        for step_id in ready:
            changed |= self._expand(campaign_id, step_id)
        return changed

    def _finish_step(
        self, session: Session, row: CampaignRow, step: CampaignStepRow, counts: dict[str, int]
    ) -> bool:
        open_ = sum(counts.get(s, 0) for s in (State.READY, State.RUNNING, State.PAUSED))
        if open_:
            return False
        bad = counts.get(State.FAILED, 0) + counts.get(State.CANCELLED, 0)
        total = sum(counts.values())
        if bad:
            step.message = f"{bad} of {total} group(s) failed"
            change_state(session, step, State.FAILED, reason=step.message)
            self.say(f"campaign {row.id} ({row.name}): step {step.name} failed: {step.message}")
        else:
            step.message = f"{total} group(s) succeeded"
            change_state(session, step, State.SUCCEEDED, reason=step.message)
            self.say(f"campaign {row.id} ({row.name}): step {step.name} succeeded")
        return True

    def _finish_campaign(
        self, session: Session, row: CampaignRow, steps: list[CampaignStepRow], expanding: bool
    ) -> bool:
        states = [s.state for s in steps]
        if all(s == State.SUCCEEDED for s in states):
            row.message = f"{len(steps)} step(s) succeeded"
            change_state(session, row, State.SUCCEEDED, reason=row.message)
            self.say(f"campaign {row.id} ({row.name}) succeeded")
            return True
        busy = expanding or any(s in (State.READY, State.RUNNING) for s in states)
        failed = [s.name for s in steps if s.state == State.FAILED]
        if failed and not busy:
            row.message = f"step(s) failed: {', '.join(failed)}"
            change_state(session, row, State.FAILED, reason=row.message)
            self._failing.append((row.id, row.name, row.message))
            self.say(
                f"campaign {row.id} ({row.name}) failed: {row.message}; see "
                f"`skybatch campaign report {row.id}`, then `skybatch campaign retry {row.id}`"
            )
            return True
        return False

    def _expand(self, campaign_id: int, step_id: int) -> bool:
        with self.sessions() as session:
            row = session.get(CampaignRow, campaign_id)
            step = session.get(CampaignStepRow, step_id)
            assert row is not None and step is not None
            campaign = self._campaign(row)
            runs_of = _runs_of(session, campaign_id)
        step_config = campaign.step(step.name)
        error = None
        try:
            expansion = self.expander(campaign, step_config, runs_of)
        except InputError as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an untranslated Butler error: the step fails
            _log.exception("expanding step %s of campaign %d failed", step.name, campaign_id)
            error = f"expansion failed unexpectedly: {type(exc).__name__}: {exc}"
        with self.sessions.begin() as session:
            row = session.get(CampaignRow, campaign_id)
            step = session.get(CampaignStepRow, step_id)
            assert row is not None and step is not None
            if row.state != State.RUNNING or step.state != State.READY:
                return True  # paused or cancelled meanwhile: read again
            step.expanded_at = utcnow()
            label = f"campaign {row.id} ({row.name}): step {step.name}"
            if error is not None:
                step.message = error
                change_state(session, step, State.FAILED, reason=error)
                self.say(f"{label} failed: {error}")
                return True
            step.selection = expansion.selection
            step.message = expansion.message
            if not expansion.groups:
                change_state(session, step, State.SUCCEEDED, reason=expansion.message)
                self.say(f"{label} succeeded with no group: {expansion.message}")
                return True
            session.execute(
                insert(CampaignGroupRow),
                [
                    {
                        "campaign_id": campaign_id,
                        "step_id": step_id,
                        "name": group.name,
                        "position": position,
                        "data_query": group.query,
                        "state": State.READY.value,
                        "run_name": run_name(row.name, row.id, step.name, group.name, row.uuid),
                        "attempts": 0,
                        "created_at": utcnow(),
                    }
                    for position, group in enumerate(expansion.groups)
                ],
            )
            reason = f"expanded into {len(expansion.groups)} group(s)"
            if expansion.message:
                reason += f"; {expansion.message}"
            change_state(session, step, State.RUNNING, reason=reason)
            self.say(f"{label}: {reason}")
        return True

    # -- running groups ---------------------------------------------------------
    def _next_group(self) -> int | None:
        orphans = sorted(self._orphans or ())
        if orphans:
            return orphans[0]
        with self.sessions() as session:
            return session.scalar(
                select(CampaignGroupRow.id)
                .join(CampaignStepRow, CampaignStepRow.id == CampaignGroupRow.step_id)
                .join(CampaignRow, CampaignRow.id == CampaignGroupRow.campaign_id)
                .where(
                    CampaignGroupRow.state == State.READY.value,
                    CampaignStepRow.state == State.RUNNING.value,
                    CampaignRow.state == State.RUNNING.value,
                )
                .order_by(
                    CampaignStepRow.priority.desc(),
                    CampaignRow.priority.desc(),
                    CampaignRow.id,
                    CampaignStepRow.position,
                    CampaignGroupRow.position,
                )
                .limit(1)
            )

    def _run(self, group_id: int, report: PassReport) -> None:
        orphan = self._orphans is not None and group_id in self._orphans
        if self._orphans is not None:
            self._orphans.discard(group_id)
        try:
            started = self._start(group_id, orphan)
        except StateConflict as exc:
            _log.info("group %d changed before it could start: %s", group_id, exc)
            return
        if started is None:
            return
        label, options, _ = started
        self.say(f"{label}: {'resuming' if orphan else 'starting'} run {options.output_run}")
        outcome = self.executor(
            self.settings, options, stop=lambda: self._stopped(group_id), after_restart=orphan
        )
        self._conclude(group_id, label, outcome, report)

    def _conclude(
        self, group_id: int, label: str, outcome: GroupOutcome, report: PassReport
    ) -> None:
        report.groups_run += 1
        try:
            with self.sessions.begin() as session:
                group = session.get(CampaignGroupRow, group_id)
                assert group is not None
                if group.state != State.RUNNING:
                    self.say(f"{label}: {group.state} while running; its run was stopped")
                    return
                group.message = outcome.message
                target = State.SUCCEEDED if outcome.state == "succeeded" else State.FAILED
                change_state(session, group, target, reason=outcome.message)
        except StateConflict:
            self.say(f"{label}: changed by an operator while running; outcome not recorded")
            return
        (report.succeeded if target is State.SUCCEEDED else report.failed).append(label)
        self.say(f"{label}: {outcome.message}")

    def _start(self, group_id: int, orphan: bool) -> tuple[str, Any, _Flight] | None:
        with self.sessions.begin() as session:
            group = session.get(CampaignGroupRow, group_id)
            if group is None:
                return None
            row = session.get(CampaignRow, group.campaign_id)
            step = session.get(CampaignStepRow, group.step_id)
            assert row is not None and step is not None
            if orphan:
                if group.state != State.RUNNING:
                    return None
                reason = "resumed after a manager restart"
            elif group.state == State.READY and row.state == State.RUNNING:
                reason = f"run {group.run_name} started"
            else:
                return None
            campaign = self._campaign(row)
            step_config = campaign.step(step.name)
            options = group_run_options(
                campaign,
                step_config,
                inputs=_inputs(session, row.id, campaign, step.name),
                query=group.data_query,
                run=group.run_name,
                overrides=step.overrides,
                registry=self._registry,
            )
            group.attempts += 1
            change_state(session, group, State.RUNNING, reason=reason)
            label = f"campaign {row.id} ({row.name}): {step.name}/{group.name}"
            engine = campaign.engine
            flight = _Flight(
                group_id,
                row.id,
                step.id,
                label,
                (step.priority, row.priority),
                engine.workers or engine.settings.get("max_workers"),
            )
            return label, options, flight

    def _stopped(self, group_id: int) -> bool:
        with self.sessions() as session:
            state = session.scalar(
                select(CampaignGroupRow.state).where(CampaignGroupRow.id == group_id)
            )
        return state != State.RUNNING

    # -- campaign end -----------------------------------------------------------
    def _cleanup_ended(self) -> None:
        with self.sessions() as session:
            rows = list(
                session.scalars(
                    select(CampaignRow).where(
                        CampaignRow.state.in_([State.SUCCEEDED.value, State.CANCELLED.value]),
                        CampaignRow.cleaned_at.is_(None),
                    )
                )
            )
        for row in rows:
            if row.id in self._cleanup_failed:
                continue
            try:
                summary = cleanup_campaign(self.settings, row.id, self._campaign(row))
            except Exception as exc:
                _log.exception("cleanup of campaign %d failed", row.id)
                self._cleanup_failed.add(row.id)
                self.say(f"campaign {row.id} ({row.name}): cleanup failed: {exc}")
                continue
            text = format_cleanup(summary)
            with self.sessions.begin() as session:
                live = session.get(CampaignRow, row.id)
                assert live is not None
                live.summary = {**live.summary, "cleanup": summary}
                live.cleaned_at = utcnow()
            self.say(f"campaign {row.id} ({row.name}) {text}")


@dataclass(frozen=True)
class _Flight:
    """A group the manager handed to its execution pool."""

    group_id: int
    campaign_id: int
    step_id: int
    label: str
    priority: tuple[int, int]
    engine_workers: int | None


def _steps(session: Session, campaign_id: int) -> list[CampaignStepRow]:
    return list(
        session.scalars(
            select(CampaignStepRow)
            .where(CampaignStepRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position)
        )
    )


def _group_counts(session: Session, campaign_id: int) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(CampaignGroupRow.step_id, CampaignGroupRow.state, func.count())
        .where(CampaignGroupRow.campaign_id == campaign_id)
        .group_by(CampaignGroupRow.step_id, CampaignGroupRow.state)
    )
    for step_id, state, n in rows:
        out.setdefault(step_id, {})[state] = n
    return out


def _runs_of(
    session: Session, campaign_id: int, steps: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Output runs of every step's groups (only of ``steps`` if given), in group order."""
    out: dict[str, list[str]] = {}
    query = (
        select(CampaignStepRow.name, CampaignGroupRow.run_name)
        .join(CampaignGroupRow, CampaignGroupRow.step_id == CampaignStepRow.id)
        .where(CampaignStepRow.campaign_id == campaign_id)
        .order_by(CampaignStepRow.position, CampaignGroupRow.position)
    )
    if steps is not None:
        query = query.where(CampaignStepRow.name.in_(list(steps)))
    rows = session.execute(query)
    for step, run in rows:
        out.setdefault(step, []).append(run)
    return out


def _inputs(session: Session, campaign_id: int, campaign: Campaign, step_name: str) -> list[str]:
    """Input collections of a step's groups: the output runs of the steps it depends on
    (nearest first, so the campaign's own outputs win), then the campaign's inputs and
    its calibration collection."""
    order: list[str] = []
    todo = list(campaign.step(step_name).depends_on)
    while todo:
        name = todo.pop(0)
        if name not in order:
            order.append(name)
            todo.extend(campaign.step(name).depends_on)
    # Only the steps it depends on: a group's start reads their groups, not the
    # campaign's (thousands of groups would make starting them all quadratic).
    runs_of = _runs_of(session, campaign_id, order) if order else {}
    collections = [run for name in order for run in runs_of.get(name, [])]
    collections += campaign.inputs
    if campaign.calibration is not None:
        collections.append(campaign.calibration.collection)
    return list(dict.fromkeys(collections))
