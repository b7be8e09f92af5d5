"""Jobs no allocation of the engine's settings can take: refused up front or failed at
once with both numbers, never left waiting (Slurm's pilot mode waited forever)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from skybatch.cli.main import main
from skybatch.db.state import open_state_db
from skybatch.engines.base import FailureKind, JobState
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.slurm.admission import admission_problem, parse_sinfo, parse_slurm_time
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.engines.slurm.engine import SlurmEngine
from skybatch.engines.slurm.settings import PilotSettings, SlurmSettings
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.run.scheduler import Scheduler, SchedulerHooks
from skybatch.settings import load_settings

PILOT = SlurmSettings(mode="pilot", pilot=PilotSettings(walltime_s=3600, memory_mb=4096, cores=2))


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            ResourceRequest(walltime_s=3600),
            "walltime 3600 s plus the pilots' end margin 120 s exceeds the pilots' walltime "
            "3600 s (pilot.walltime_s)",
        ),
        (
            ResourceRequest(walltime_s=3480, memory_mb=4097),
            "memory 4097 MB exceeds the pilots' memory 4096 MB (pilot.memory_mb)",
        ),
        (ResourceRequest(walltime_s=60, cores=3), "3 cores exceed the pilots' 2 cores"),
        (ResourceRequest(walltime_s=3480, memory_mb=4096, cores=2), None),
    ],
    ids=["walltime", "memory", "cores", "fits exactly"],
)
def test_pilot_admission_names_both_numbers(
    request_: ResourceRequest, expected: str | None
) -> None:
    problem = admission_problem(PILOT, request_)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_default_pilots_take_the_default_job() -> None:
    """The documented pilot commands use the defaults: they must be able to finish."""
    settings = SlurmSettings(mode="pilot")
    assert admission_problem(settings, ResourceRequest()) is None


SINFO = (
    "debug*|1:00:00|7900|2\n"
    "long|2-00:00:00|64000|32\n"
    "long|2-00:00:00|128000+|64\n"
    "free|infinite|n/a|4\n"
)


def test_partition_limits_from_sinfo() -> None:
    limits = parse_sinfo(SINFO)
    assert limits[""] == limits["debug"]
    assert (limits["debug"].max_time_s, limits["debug"].memory_mb, limits["debug"].cpus) == (
        3600,
        7900,
        2,
    )
    assert (limits["long"].max_time_s, limits["long"].memory_mb, limits["long"].cpus) == (
        172800,
        128000,
        64,
    )
    assert limits["free"].max_time_s is None and limits["free"].memory_mb is None
    for text, seconds in [
        ("30", 1800),
        ("30:15", 1815),
        ("1:00:00", 3600),
        ("1-02", 93600),
        ("1-02:03", 93780),
        ("1-02:03:04", 93784),
        ("UNLIMITED", None),
    ]:
        assert parse_slurm_time(text) == seconds, text


def _runner(sinfo: str):  # type: ignore[no-untyped-def]
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        out = sinfo if argv[0] == "sinfo" else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    return run, calls


def test_per_job_mode_checks_the_partitions_time_limit_memory_and_cpus(tmp_path: Path) -> None:
    run, calls = _runner(SINFO)
    engine = SlurmEngine(SlurmSettings(script_dir=tmp_path), commands=SlurmCommands(run))
    problem = engine.admission_problem(ResourceRequest(walltime_s=3600))
    assert problem == (
        "walltime 3600 s (+ walltime_grace_s 60 s) exceeds the time limit of partition "
        "'debug', 3600 s"
    )
    assert engine.admission_problem(ResourceRequest(walltime_s=3540)) is None
    problem = engine.admission_problem(ResourceRequest(walltime_s=60, memory_mb=7900))
    assert (
        problem is not None and "exceeds the largest node of partition 'debug', 7900 MB" in problem
    )
    assert len([c for c in calls if c[0] == "sinfo"]) == 1, "asked once"
    long = SlurmEngine(
        SlurmSettings(script_dir=tmp_path, partition="long"), commands=SlurmCommands(run)
    )
    assert long.admission_problem(ResourceRequest(walltime_s=86400, memory_mb=100_000)) is None
    # Pilots the partition cannot grant leave every job waiting.
    pilots = SlurmEngine(
        SlurmSettings(script_dir=tmp_path, mode="pilot"), commands=SlurmCommands(run)
    )
    problem = pilots.admission_problem(ResourceRequest())
    assert (
        problem is not None and "the pilots' walltime 7200 s (pilot.walltime_s) exceeds" in problem
    )


def test_unknown_partition_limits_refuse_nothing(tmp_path: Path) -> None:
    def broken(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 1, "", "sinfo: error")

    engine = SlurmEngine(SlurmSettings(script_dir=tmp_path), commands=SlurmCommands(broken))
    assert engine.admission_problem(ResourceRequest(walltime_s=10**6)) is None


def test_the_local_engine_takes_every_job() -> None:
    """It reserves nothing per job (memory and walltime are limits it enforces)."""
    engine = LocalEngine(LocalSettings(max_workers=1, preload=[]))
    try:
        assert engine.admission_problem(ResourceRequest(memory_mb=10**7, cores=512)) is None
    finally:
        engine.close()


def test_run_refuses_jobs_no_pilot_can_take_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    # A repository's configuration: --repo is resolved (skybatch.repository) first.
    (tmp_path / "butler.yaml").write_text("datastore:\n  root: <butlerRoot>\n")
    args = ["--home", str(home), "run", "--repo", str(tmp_path), "--pipeline", "p.yaml"]
    args += ["--input", "a", "--engine", "slurm", "--engine-setting", "mode=pilot"]
    code = main([*args, "--engine-setting", "pilot.walltime_s=3600"])
    err = capsys.readouterr().err
    assert code == 2
    assert "(at the default request (--memory-mb))" in err
    assert (
        "walltime 3600 s plus the pilots' end margin 120 s exceeds the pilots' walltime 3600 s"
        in err
    )
    code = main([*args, "--resources", "coadd=walltime_s:9000"])
    err = capsys.readouterr().err
    assert code == 2 and "(at --resources coadd)" in err and "walltime 9000 s" in err
    assert not home.exists()


def test_scheduler_fails_a_job_no_allocation_can_take_at_once_and_holds_it(
    tmp_path: Path,
) -> None:
    """Memory raised after an out-of-memory failure can outgrow the pilots: the job fails
    as unschedulable with both numbers, without reaching Slurm, and blocks its children."""
    sessions = open_state_db(load_settings(home=tmp_path / "home"))
    with sessions.begin() as session:
        row = RunRow(name="t/run", repo="/nowhere", pipeline="p", workdir=str(tmp_path))
        session.add(row)
        session.flush()
        run_id = row.id

    def node(name: str, deps: list[str]) -> JobNode:
        return JobNode(
            name=name,
            label=name,
            quanta=[name],
            task_labels=[name],
            data_ids=[{}],
            resources=ResourceRequest(memory_mb=8192, walltime_s=60),
            depends_on=deps,
        )

    workflow = Workflow.of_jobs("t/run", [node("big", []), node("child", ["big"])], pipeline="p")

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        raise AssertionError("no spec: the job must not reach the engine")

    run, calls = _runner("")
    engine = SlurmEngine(
        PILOT.model_copy(update={"script_dir": tmp_path}), commands=SlurmCommands(run)
    )
    scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec))
    scheduler.create_jobs()
    started = time.monotonic()
    result = scheduler.run()
    assert time.monotonic() - started < 30  # it ends; it does not wait for a pilot
    assert result.counts == {"held": 1, "pending": 1}
    assert not [c for c in calls if c[0] == "sbatch"]
    with sessions() as session:
        big = session.scalars(select(JobRow).where(JobRow.name == "big")).one()
        attempt = session.scalars(select(JobAttemptRow)).one()
    assert big.state == JobState.HELD.value and big.failure == FailureKind.UNSCHEDULABLE.value
    assert big.error == (
        "job big cannot be scheduled: memory 8192 MB exceeds the pilots' memory 4096 MB "
        "(pilot.memory_mb): no pilot can take it"
    )
    assert (attempt.state, attempt.failure) == ("failed", "unschedulable")
