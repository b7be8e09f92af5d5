"""The manager's pass with stand-ins for expansion and group execution (no Butler, no
engine), and the campaign report summed over what the groups' runs recorded."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from skybatch.campaign import render
from skybatch.campaign.config import Campaign, Step
from skybatch.campaign.execute import GroupOutcome, run_group
from skybatch.campaign.expansion import GroupSpec, StepExpansion
from skybatch.campaign.manager import Manager
from skybatch.campaign.models import (
    CampaignEventRow,
    CampaignGroupRow,
    CampaignRow,
    CampaignStepRow,
)
from skybatch.campaign.render import format_report
from skybatch.db.state import open_state_db
from skybatch.read.campaigns import campaign_report
from skybatch.read.models import jsonable
from skybatch.run.models import JobAttemptRow, JobRow, QuantumRunRow, RunRow
from skybatch.run.pool import ExecutionPool
from skybatch.run.testing import IndependentJobs, SyntheticBookkeeping, instant_engine
from skybatch.settings import Settings, load_settings


def _submit(settings: Settings) -> int:
    """A two-step campaign stored as ``campaign submit`` stores it (without its files)."""
    campaign = Campaign.model_validate(
        {
            "name": "standin",
            "repo": "/nowhere/repo",
            "inputs": ["In/raw"],
            "policies": {"cleanup_at_end": False},
            "steps": [
                {"name": "step1", "pipeline": "/nowhere/p.yaml#a,b"},
                {"name": "step2", "pipeline": "/nowhere/p.yaml#a,b", "depends_on": ["step1"]},
            ],
        }
    )
    with open_state_db(settings).begin() as session:
        row = CampaignRow(
            name=campaign.name,
            config=campaign.model_dump(mode="json", exclude_unset=True),
            source_path="standin.yaml",
            state="waiting",
            summary={},
        )
        session.add(row)
        session.flush()
        for position, step in enumerate(campaign.steps):
            session.add(
                CampaignStepRow(
                    campaign_id=row.id, name=step.name, position=position, state="waiting"
                )
            )
        return row.id


def _run_tag(settings: Settings, campaign_id: int) -> str:
    """``<id>-<12 hex digits of the campaign's UUID>``: the campaign's part of its run names."""
    with open_state_db(settings)() as session:
        row = session.get(CampaignRow, campaign_id)
        assert row is not None
        return f"{campaign_id}-{row.uuid.replace('-', '')[:12]}"


def _expand(campaign: Campaign, step: Step, runs_of: Mapping[str, Sequence[str]]) -> Any:
    if step.name == "step2":  # expanded once step1's groups ran: their runs are known
        # <campaign>/<id>-<12 hex digits of the campaign's UUID>/<step>/<group>
        tag = runs_of["step1"][0].split("/")[1]
        assert re.fullmatch(r"1-[0-9a-f]{12}", tag)
        assert runs_of["step1"] == [f"standin/{tag}/step1/g0", f"standin/{tag}/step1/g1"]
    return StepExpansion([GroupSpec(f"g{i}", f"visit = {i}") for i in range(2)])


def _record(settings: Settings, run: str, failing: bool) -> None:
    """What a run of tasks a (2 quanta) and b (1) leaves: a0 failed its first attempt
    and succeeded its second; b0 of a failing run failed both its attempts (held)."""
    with open_state_db(settings).begin() as session:
        row = RunRow(
            name=run,
            repo="/nowhere/repo",
            pipeline="p.yaml",
            workdir="/nowhere",
            state="failed" if failing else "succeeded",
            summary={"quanta_per_task": {"a": 2, "b": 1}},
        )
        session.add(row)
        session.flush()
        attempts = {"a0": ["failed", "succeeded"], "a1": ["succeeded"], "b0": ["succeeded"]}
        if failing:
            attempts["b0"] = ["failed", "failed"]
        for name, outcomes in attempts.items():
            held = outcomes[-1] == "failed"
            job = JobRow(
                run_id=row.id,
                name=name,
                label=name[0],
                state="held" if held else "succeeded",
                attempts=len(outcomes),
                memory_mb=1024,
                walltime_s=600,
                exit_code=3 if held else 0,
                failure="error" if held else None,
                error="RuntimeError: bad pixels\nTraceback ..." if held else None,
            )
            session.add(job)
            session.flush()
            for attempt, status in enumerate(outcomes, start=1):
                session.add(
                    QuantumRunRow(
                        run_id=row.id,
                        job_id=job.id,
                        attempt=attempt,
                        quantum_id=f"{run}/{name}",
                        task_label=job.label,
                        status=status,
                        cpu_s=360.0,
                        max_rss_mb=100.0 * attempt,
                    )
                )


def _executor(settings: Settings, calls: list[Any]) -> Callable[..., GroupOutcome]:
    def execute(
        settings: Settings,
        options: Any,
        *,
        progress: Callable[[int, int], None] | None = None,
        stop: Callable[[], bool] | None = None,
        after_restart: bool = False,
    ) -> GroupOutcome:
        assert stop is not None and not stop()  # the group is running, not cancelled
        calls.append(options)
        failing = options.output_run.endswith("step2/g1")
        _record(settings, options.output_run, failing)
        if failing:
            return GroupOutcome("failed", f"run {options.output_run} failed: jobs held=1")
        return GroupOutcome("succeeded", f"run {options.output_run} succeeded")

    return execute


@pytest.fixture
def ran(tmp_path: Path) -> tuple[Settings, int, list[Any]]:
    settings = load_settings(home=tmp_path / "home")
    campaign_id = _submit(settings)
    calls: list[Any] = []
    manager = Manager(
        settings, say=lambda text: None, executor=_executor(settings, calls), expander=_expand
    )
    manager.run_pass()
    assert manager.state_of(campaign_id) == "failed"
    return settings, campaign_id, calls


def test_the_manager_runs_groups_through_the_injected_executor_and_expander(
    ran: tuple[Settings, int, list[Any]],
) -> None:
    settings, campaign_id, calls = ran
    assert Manager(settings).executor is run_group  # the real ones by default
    runs = [options.output_run for options in calls]
    tag = _run_tag(settings, campaign_id)
    assert runs == [f"standin/{tag}/step{s}/g{g}" for s in (1, 2) for g in (0, 1)]
    step2 = calls[2]
    assert step2.query == "visit = 0"
    assert step2.inputs == [*runs[:2], "In/raw"]  # step1's outputs first
    with open_state_db(settings)() as session:
        steps = {
            name: state
            for name, state in session.execute(select(CampaignStepRow.name, CampaignStepRow.state))
        }
        events = session.execute(
            select(CampaignEventRow.kind, CampaignEventRow.to_state).where(
                CampaignEventRow.from_state != ""
            )
        ).all()
    assert steps == {"step1": "succeeded", "step2": "failed"}
    kinds = [kind for kind, _ in events]
    # campaign: ->running, ->failed; per step: ->ready, ->running, ->(succeeded|failed);
    # per group: ->running, ->(succeeded|failed)
    assert (kinds.count("campaign"), kinds.count("step"), kinds.count("group")) == (2, 6, 8)


def _report(settings: Settings, campaign_id: int) -> Any:
    """The campaign report as `skybatch campaign report --json` prints it."""
    with open_state_db(settings)() as session:
        return jsonable(campaign_report(session, campaign_id))


def test_the_report_sums_runs_per_group_step_and_task(
    ran: tuple[Settings, int, list[Any]],
) -> None:
    settings, campaign_id, _ = ran
    report = _report(settings, campaign_id)
    step1, step2 = report["steps"]
    ok = {"expected": 3, "succeeded": 3, "failed": 0, "running": 0}
    for group in step1["groups"]:
        assert {k: group["total"][k] for k in ok} == ok
        assert group["total"]["cpu_hours"] == pytest.approx(0.4)  # every attempt counts
        assert group["total"]["peak_memory_mb"] == 200.0
        assert group["tasks"] is None  # a succeeded group's tasks are its step's
    assert step1["group_states"] == {"succeeded": 2}
    assert step1["tasks"]["a"] == {
        "expected": 4,
        "succeeded": 4,  # a0's newest attempt decides
        "failed": 0,
        "running": 0,
        "cpu_hours": pytest.approx(0.6),
        "peak_memory_mb": 200.0,
    }
    failed = step2["groups"][1]
    assert (failed["name"], failed["state"]) == ("g1", "failed")
    assert failed["tasks"]["b"] == {
        "expected": 1,
        "succeeded": 0,
        "failed": 1,
        "running": 0,
        "cpu_hours": pytest.approx(0.2),
        "peak_memory_mb": 200.0,
    }
    assert step2["group_states"] == {"succeeded": 1, "failed": 1}
    assert report["tasks"]["b"]["expected"] == 4 and report["tasks"]["b"]["failed"] == 1
    assert {k: report["total"][k] for k in ok} == {
        "expected": 12,
        "succeeded": 11,
        "failed": 1,
        "running": 0,
    }
    assert report["failures_total"] == 1
    (failure,) = report["failures"]
    assert (failure["step"], failure["group"], failure["job"]) == ("step2", "g1", "b0")
    assert failure["error"] == "RuntimeError: bad pixels"

    # A run going again: its submitted jobs' quanta are running.
    with open_state_db(settings).begin() as session:
        run_id = session.scalar(select(RunRow.id).where(RunRow.name == failed["run"]))
        session.execute(update(RunRow).where(RunRow.id == run_id).values(state="running"))
        session.execute(
            update(JobRow)
            .where(JobRow.run_id == run_id, JobRow.name == "b0")
            .values(state="submitted")
        )
    report = _report(settings, campaign_id)
    assert report["steps"][1]["groups"][1]["tasks"]["b"]["running"] == 1
    assert report["tasks"]["b"]["running"] == 1


def test_the_text_report_lists_only_groups_not_succeeded_of_a_large_step(
    ran: tuple[Settings, int, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, campaign_id, _ = ran
    with open_state_db(settings)() as session:
        report = campaign_report(session, campaign_id)
    text = format_report(report)
    assert "group g0: succeeded" in text  # few groups: every one is listed
    monkeypatch.setattr(render, "MAX_GROUP_LINES", 1)
    lines = format_report(report).splitlines()
    assert "  2 groups: succeeded 2" in lines
    assert "  2 groups: failed 1, succeeded 1" in lines
    listed = [line for line in lines if line.startswith("  group ")]
    assert listed == [
        f"  group g1: failed (run standin/{_run_tag(settings, campaign_id)}/step2/g1, "
        "2/3 quanta succeeded)"
    ]


# -- the pool's pass with stand-ins: groups in flight, limits, priority ---------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Butler repository (a run's context checks that its repository is one;
    nothing reads it)."""
    from lsst.daf.butler import Butler

    path = tmp_path_factory.mktemp("standins") / "repo"
    Butler.makeRepo(str(path))
    return path


def _submit_pooled(
    settings: Settings,
    repo: Path,
    name: str,
    *,
    priority: int = 0,
    max_running_groups: int | None = None,
    steps: int = 2,
) -> int:
    """A campaign of ``steps`` steps (each depending on the one before) on an engine of
    2 workers (4 jobs in the engine at once), stored as ``campaign submit`` stores it
    (without its files)."""
    campaign = Campaign.model_validate(
        {
            "name": name,
            "repo": str(repo),
            "inputs": ["In/raw"],
            "engine": {"name": "local", "workers": 2},
            "policies": {
                "cleanup_at_end": False,
                "priority": priority,
                "concurrency": {"max_running_groups": max_running_groups},
            },
            "steps": [
                {"name": "step1", "pipeline": "/nowhere/p.yaml#a"},
                {"name": "step2", "pipeline": "/nowhere/p.yaml#a", "depends_on": ["step1"]},
            ][:steps],
        }
    )
    with open_state_db(settings).begin() as session:
        row = CampaignRow(
            name=campaign.name,
            config=campaign.model_dump(mode="json", exclude_unset=True),
            source_path=f"{name}.yaml",
            state="waiting",
            priority=priority,
            summary={},
        )
        session.add(row)
        session.flush()
        for position, step in enumerate(campaign.steps):
            session.add(
                CampaignStepRow(
                    campaign_id=row.id,
                    name=step.name,
                    position=position,
                    state="waiting",
                    priority=priority,
                )
            )
        return row.id


def _groups_of(n: int) -> Callable[[Campaign, Step, Mapping[str, Sequence[str]]], Any]:
    def expand(campaign: Campaign, step: Step, runs_of: Mapping[str, Sequence[str]]) -> Any:
        return StepExpansion([GroupSpec(f"g{i}", f"visit = {i}") for i in range(n)])

    return expand


def _pooled(
    settings: Settings, groups: int, jobs: int, max_groups: int
) -> tuple[Manager, SyntheticBookkeeping, list[list[Hashable]]]:
    """A manager whose pool sets runs up and finishes them with stand-ins, on an
    instant engine; every loop's groups in flight are recorded."""
    bookkeeping = SyntheticBookkeeping(IndependentJobs(jobs))
    seen: list[list[Hashable]] = []

    def pool(settings: Settings) -> ExecutionPool:
        return ExecutionPool(settings, bookkeeping=bookkeeping, engine_factory=instant_engine)

    manager = Manager(
        settings,
        say=lambda text: None,
        expander=_groups_of(groups),
        pool=pool,
        max_groups=max_groups,
        progress=lambda: seen.append(manager.pool.in_flight()),
    )
    return manager, bookkeeping, seen


def _submissions(settings: Settings) -> list[str]:
    """The campaign (its name) of every job attempt, in the order they were submitted."""
    with open_state_db(settings)() as session:
        rows = session.execute(
            select(CampaignRow.name)
            .select_from(JobAttemptRow)
            .join(JobRow, JobRow.id == JobAttemptRow.job_id)
            .join(RunRow, RunRow.id == JobRow.run_id)
            .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
            .join(CampaignRow, CampaignRow.id == CampaignGroupRow.campaign_id)
            .order_by(JobAttemptRow.submitted_at, JobAttemptRow.id)
        ).all()
    return [name for (name,) in rows]


def test_the_pool_pass_runs_many_groups_in_flight_within_the_limits(
    tmp_path: Path, repo: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    first = _submit_pooled(settings, repo, "first", max_running_groups=5)
    second = _submit_pooled(settings, repo, "second", max_running_groups=5)
    manager, bookkeeping, seen = _pooled(settings, groups=12, jobs=6, max_groups=8)
    with manager:
        report = manager.run_pass()
    assert manager.state_of(first) == manager.state_of(second) == "succeeded"
    assert report.groups_run == 48 and not report.failed
    with open_state_db(settings)() as session:
        groups = session.execute(select(CampaignGroupRow.id, CampaignGroupRow.step_id)).all()
        states = set(session.scalars(select(CampaignGroupRow.state)))
        runs = set(session.scalars(select(RunRow.state)))
        jobs = set(session.scalars(select(JobRow.state)))
    # Every group's run was set up and finished by the pool, every job ran on its engine.
    assert states == {"succeeded"} and runs == {"succeeded"} and jobs == {"succeeded"}
    assert len(bookkeeping.set_up_runs) == len(bookkeeping.finished_runs) == 48
    step_of = dict(groups)
    most = max(len(flight) for flight in seen)
    most_per_step = max(
        max(Counter(step_of[int(g)] for g in flight).values(), default=0)  # type: ignore[call-overload]
        for flight in seen
    )
    assert most == 8  # --max-groups reached, never exceeded
    assert most_per_step == 5  # each step's max_running_groups reached, never exceeded


def test_a_higher_priority_campaigns_jobs_go_first(tmp_path: Path, repo: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    # The low-priority campaign is the older one: only its priority holds it back.
    low = _submit_pooled(settings, repo, "low", priority=0, steps=1)
    high = _submit_pooled(settings, repo, "high", priority=5, steps=1)
    manager, _, _ = _pooled(settings, groups=4, jobs=8, max_groups=20)
    with manager:
        manager.run_pass()
    assert manager.state_of(low) == manager.state_of(high) == "succeeded"
    # The high-priority campaign's jobs go first; the low one only fills the engine's
    # free slots (4: 2 workers and 2 queued) while the high one's last jobs are submitted.
    order = _submissions(settings)
    last_high = max(i for i, name in enumerate(order) if name == "high")
    assert order.count("high") == order.count("low") == 32
    assert order[:last_high].count("low") < 4, order


def test_campaigns_of_equal_priority_share_the_engine(tmp_path: Path, repo: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    a = _submit_pooled(settings, repo, "a", steps=1)
    b = _submit_pooled(settings, repo, "b", steps=1)
    manager, _, _ = _pooled(settings, groups=4, jobs=8, max_groups=20)
    with manager:
        manager.run_pass()
    assert manager.state_of(a) == manager.state_of(b) == "succeeded"
    # Their jobs interleave: once both have runs set up (the first campaign's first run
    # is set up a loop earlier: at most 2 loops of the engine's 4 slots ahead), neither
    # gets more than the engine's 4 slots in a row while both have jobs left.
    text = "".join(_submissions(settings))
    assert sorted(text) == sorted("ab" * 32)
    start = max(text.index("a"), text.index("b"))
    end = min(text.rindex("a"), text.rindex("b"))
    assert start <= 8, text
    assert max(len(m.group()) for m in re.finditer(r"a+|b+", text[start:end])) <= 4, text
