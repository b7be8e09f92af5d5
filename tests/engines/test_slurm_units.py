"""Unit tests of the Slurm engine with the process boundary replaced: the Slurm tools'
outputs come from ``slurm_fixtures/`` (captured from a real Slurm 22.05) or are
written here; the integration tests (conformance suite, test_slurm_cluster.py) run
the same code against a real Slurm."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from skybatch.engines.base import FailureKind, JobState, JobStatus
from skybatch.engines.slurm import PilotSettings, SlurmEngine, SlurmSettings
from skybatch.engines.slurm.commands import (
    SlurmCommands,
    parse_memory_mb,
    parse_sacct,
    parse_sbatch,
    parse_scontrol,
    parse_squeue,
)
from skybatch.engines.slurm.engine import format_time, render_template
from skybatch.engines.slurm.states import SLURM_STATES, UnknownSlurmState, translate
from skybatch.engines.testing import make_spec

FIXTURES = Path(__file__).parent / "slurm_fixtures"


class FakeSlurm:
    """Answers Slurm commands from canned outputs and records every argv."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.squeue_text = ""
        self.sacct_text = ""
        self.sacct_code = 0
        self.scontrol_text = ""
        self.next_id = 1000

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        tool = argv[0]
        out, err, code = "", "", 0
        if tool == "sbatch":
            self.next_id += 1
            out = f"{self.next_id}\n"
        elif tool == "squeue":
            out = self.squeue_text
        elif tool == "sacct":  # only the jobs asked for (-j ID,ID), as sacct does
            asked = set(argv[argv.index("-j") + 1].split(","))
            lines = self.sacct_text.splitlines(keepends=True)
            out = "".join(x for x in lines if x.split("|")[0].split(".")[0] in asked)
            code = self.sacct_code
            if code:
                err = "Slurm accounting storage is disabled"
        elif tool == "scontrol":
            out = self.scontrol_text
        return subprocess.CompletedProcess(argv, code, out, err)

    def calls_of(self, tool: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == tool]


@pytest.fixture
def fake() -> FakeSlurm:
    return FakeSlurm()


def _engine(fake: FakeSlurm, tmp_path: Path, **settings: object) -> SlurmEngine:
    values: dict[str, object] = {"script_dir": tmp_path / "slurm", "poll_interval_s": 0.001}
    values.update(settings)
    return SlurmEngine(SlurmSettings(**values), commands=SlurmCommands(fake))  # type: ignore[arg-type]


# -- the translation table -------------------------------------------------------------


def test_every_final_slurm_state_has_a_failure_kind_the_retry_policy_knows() -> None:
    assert translate("OUT_OF_MEMORY") == (JobState.FAILED, FailureKind.OUT_OF_MEMORY)
    assert translate("TIMEOUT") == (JobState.FAILED, FailureKind.TIMEOUT)
    assert translate("NODE_FAIL") == (JobState.FAILED, FailureKind.NODE_FAILURE)
    assert translate("PREEMPTED") == (JobState.FAILED, FailureKind.PREEMPTED)
    assert translate("CANCELLED by 0") == (JobState.CANCELLED, FailureKind.CANCELLED)
    assert translate("COMPLETED") == (JobState.SUCCEEDED, FailureKind.NONE)
    assert translate("PENDING")[0] is JobState.SUBMITTED
    assert translate("COMPLETING")[0] is JobState.RUNNING
    for state, failure in SLURM_STATES.values():
        if state is JobState.FAILED:
            assert failure is not FailureKind.NONE


def test_unknown_slurm_state_is_an_error_not_a_guess() -> None:
    with pytest.raises(UnknownSlurmState, match="WEIRD"):
        translate("WEIRD")


# -- parsers -----------------------------------------------------------------------------


def test_parse_sbatch_with_and_without_cluster() -> None:
    assert parse_sbatch("123\n") == "123"
    assert parse_sbatch("123;cluster\n") == "123"
    with pytest.raises(Exception, match="no job id"):
        parse_sbatch("sbatch: error: Batch job submission failed")


def test_parse_memory() -> None:
    assert parse_memory_mb("2048K") == 2.0
    assert parse_memory_mb("1.5G") == 1536.0
    assert parse_memory_mb("") is None
    assert parse_memory_mb("1048576") == 1.0


def test_parse_scontrol_fields() -> None:
    fields = parse_scontrol("JobId=12 JobName=x JobState=FAILED Reason=NonZero ExitCode=9:0")
    assert fields["JobState"] == "FAILED"
    assert fields["ExitCode"] == "9:0"


def test_parse_squeue_keys_array_tasks_by_their_slurm_name() -> None:
    records = parse_squeue("77_0|COMPLETED|None\n77_1|PENDING|Resources\n78|RUNNING|None\n")
    assert records["77_1"].state == "PENDING" and records["77_1"].reason == "Resources"
    assert set(records) == {"77_0", "77_1", "78"}


def test_parse_sacct_takes_state_from_the_job_and_rss_from_its_steps() -> None:
    text = (
        "55_0|COMPLETED|0:0|\n55_0.batch|COMPLETED|0:0|20480K\n55_0.extern|COMPLETED|0:0|1024K\n"
        "55_1|OUT_OF_MEMORY|0:125|\n55_1.batch|OUT_OF_MEMORY|0:125|410M\n"
        "56|CANCELLED by 0|0:15|\n"
    )
    records = parse_sacct(text)
    assert records["55_0"].state == "COMPLETED" and records["55_0"].max_rss_mb == 20.0
    assert records["55_1"].state == "OUT_OF_MEMORY" and records["55_1"].max_rss_mb == 410.0
    assert records["55_1"].signal == 125
    assert translate(records["56"].state)[0] is JobState.CANCELLED


# -- settings and rendering ------------------------------------------------------------------


@pytest.mark.parametrize(
    "directive", ["--constraint=a b", "--comment=$(rm -rf /)", "-x", "--mail=a;b", "foo"]
)
def test_extra_directives_that_could_reach_a_shell_are_refused(directive: str) -> None:
    with pytest.raises(ValidationError, match="extra_directives"):
        SlurmSettings(extra_directives=[directive])


def test_partition_name_is_checked() -> None:
    with pytest.raises(ValidationError, match="partition"):
        SlurmSettings(partition="debug; rm -rf /")


def test_template_quotes_every_value() -> None:
    text = render_template("pilot.sbatch", {"python": "/opt/my python/bin/python3"})
    assert "exec '/opt/my python/bin/python3' -m skybatch pilot \"$@\"" in text


def test_format_time_rounds_up_to_minutes() -> None:
    assert format_time(1) == "0-00:01:00"
    assert format_time(61) == "0-00:02:00"
    assert format_time(90_000) == "1-01:00:00"


# -- submit -----------------------------------------------------------------------------------


def test_jobs_of_one_resource_shape_share_one_array(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _engine(fake, tmp_path, partition="debug", account="survey", max_jobs=8)
    specs = [make_spec(tmp_path, f"ok-{i}", memory_mb=1024) for i in range(3)]
    specs.append(make_spec(tmp_path, "ok-big", memory_mb=4096, walltime_s=7200))
    ids = engine.submit(specs)
    assert ids == ["1001_0", "1001_1", "1001_2", "1002_0"]
    small, big = fake.calls_of("sbatch")
    assert "--array=0-2%8" in small and "--mem=1088M" in small  # memory_mb + margin
    assert "--partition=debug" in small and "--account=survey" in small
    assert "--array=0-0%8" in big and "--mem=4160M" in big and "--time=0-02:01:00" in big
    spec_list = Path(small[-1]).read_text().splitlines()
    assert spec_list == [str(tmp_path / f"ok-{i}" / "spec-1.json") for i in range(3)]
    assert json.loads(Path(spec_list[0]).read_text())["job"] == "ok-0"
    script = Path(small[-2]).read_text()
    assert "-m skybatch.engines.slurm.task" in script and "--memory-watchdog" in script


def test_names_are_not_shell_words(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _engine(fake, tmp_path)
    [spec] = [make_spec(tmp_path, "ok-1", run="u/me/$(reboot);x")]
    engine.submit([spec])
    [call] = fake.calls_of("sbatch")
    name = next(a for a in call if a.startswith("--job-name="))
    assert name == "--job-name=skybatch-u_me_reboot_x"


# -- poll ----------------------------------------------------------------------------------------


def _exit(tmp_path: Path, job: str, **record: object) -> None:
    (tmp_path / job / "exit-1.json").write_text(json.dumps({"schema_version": 1, **record}))


def test_exit_file_decides_without_asking_slurm(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _engine(fake, tmp_path)
    [ok, oom] = engine.submit([make_spec(tmp_path, "ok-1"), make_spec(tmp_path, "oom-1")])
    _exit(tmp_path, "ok-1", exit_code=0, failure="none", max_rss_mb=50.0)
    _exit(
        tmp_path,
        "oom-1",
        exit_code=137,
        failure="out_of_memory",
        message="job used 412 MB, over its memory request of 200 MB",
        max_rss_mb=412.0,
    )
    before = len(fake.calls_of("squeue"))
    first, second = engine.poll([ok, oom])
    assert first.state is JobState.SUCCEEDED and first.exit_code == 0
    assert second.state is JobState.FAILED and second.failure is FailureKind.OUT_OF_MEMORY
    assert second.max_rss_mb == 412.0 and "200 MB" in (second.message or "")
    assert len(fake.calls_of("squeue")) == before


def test_states_from_squeue_while_running_and_after_slurm_killed_the_job(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    engine = _engine(fake, tmp_path)
    ids = engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(4)])
    fake.squeue_text = "1001_0|RUNNING|None\n1001_1|PENDING|Resources\n"
    fake.squeue_text += "1001_2|OUT_OF_MEMORY|OutOfMemory\n1001_3|CANCELLED|None\n"
    fake.sacct_code = 1  # accounting disabled
    running, pending, oom, cancelled = engine.poll(ids)
    assert running.state is JobState.RUNNING
    assert pending.state is JobState.SUBMITTED
    assert oom.state is JobState.FAILED and oom.failure is FailureKind.OUT_OF_MEMORY
    assert "1024 MB" in (oom.message or "")
    assert cancelled.state is JobState.CANCELLED
    assert "not by skybatch" in (cancelled.message or "")


def test_crash_exit_code_comes_from_scontrol_without_accounting(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    engine = _engine(fake, tmp_path)
    [job] = engine.submit([make_spec(tmp_path, "crash-1")])
    fake.squeue_text = "1001_0|FAILED|NonZeroExitCode\n"
    fake.sacct_code = 1
    fake.scontrol_text = "JobId=1002 ArrayJobId=1001 ArrayTaskId=0 JobState=FAILED ExitCode=9:0\n"
    [status] = engine.poll([job])
    assert status.state is JobState.FAILED and status.failure is FailureKind.ERROR
    assert status.exit_code == 9 and "exited with code 9" in (status.message or "")


def test_sacct_answers_for_jobs_squeue_forgot(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _engine(fake, tmp_path)
    [job] = engine.submit([make_spec(tmp_path, "ok-1")])
    engine._jobs[job].submitted -= 60  # long ago
    fake.sacct_text = "1001_0|NODE_FAIL|0:0|\n"
    [status] = engine.poll([job])
    assert status.state is JobState.FAILED and status.failure is FailureKind.NODE_FAILURE


def test_unknown_everywhere_is_lost_but_not_right_after_submit(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    engine = _engine(fake, tmp_path)
    [job] = engine.submit([make_spec(tmp_path, "ok-1")])
    fake.sacct_code = 1
    assert engine.poll([job])[0].state is JobState.SUBMITTED  # squeue may lag sbatch
    engine._jobs[job].submitted -= 60
    [status] = engine.poll([job])
    assert status.state is JobState.FAILED and status.failure is FailureKind.LOST


def test_squeue_is_asked_at_most_every_poll_interval(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _engine(fake, tmp_path, poll_interval_s=60)
    ids = engine.submit([make_spec(tmp_path, "ok-1")])
    fake.squeue_text = "1001_0|RUNNING|None\n"
    for _ in range(50):
        engine.poll(ids)
    assert len(fake.calls_of("squeue")) == 1


def test_cancel_reports_at_once_and_leaves_finished_jobs_alone(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    engine = _engine(fake, tmp_path)
    done, running = engine.submit([make_spec(tmp_path, "ok-1"), make_spec(tmp_path, "sleep-1")])
    _exit(tmp_path, "ok-1", exit_code=0, failure="none")
    engine.cancel([done, running, "no-such-job"])
    assert fake.calls_of("scancel") == [["scancel", running]]
    first, second = engine.poll([done, running])
    assert first.state is JobState.SUCCEEDED
    assert second.state is JobState.CANCELLED and second.message == "cancelled by skybatch"


def test_ended_jobs_the_caller_forgets_leave_the_engine(fake: FakeSlurm, tmp_path: Path) -> None:
    # An execution pool's engine lives as long as its manager.
    engine = _engine(fake, tmp_path)
    done, running = engine.submit([make_spec(tmp_path, "ok-1"), make_spec(tmp_path, "sleep-1")])
    _exit(tmp_path, "ok-1", exit_code=0, failure="none")
    fake.squeue_text = "1001_1|RUNNING|None\n"
    assert [s.state for s in engine.poll([done, running])] == [
        JobState.SUCCEEDED,
        JobState.RUNNING,
    ]
    engine.forget([done, running])  # the one still running is kept
    assert engine.jobs_held == 1
    assert engine.poll([running])[0].state is JobState.RUNNING


# -- pilot mode --------------------------------------------------------------------------------


def _pilot_engine(fake: FakeSlurm, tmp_path: Path, **pilot: object) -> SlurmEngine:
    values: dict[str, object] = {"max_pilots": 3, "jobs_per_pilot": 4, "min_pilots": 0}
    values.update(pilot)
    return _engine(fake, tmp_path, mode="pilot", pilot=PilotSettings(**values))  # type: ignore[arg-type]


def test_pilots_follow_the_backlog_up_to_the_maximum(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _pilot_engine(fake, tmp_path)
    engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(6)])
    [first] = fake.calls_of("sbatch")
    assert "--array=0-1" in first  # 6 queued jobs, 4 per pilot: 2 pilots
    assert "--job-name=skybatch-pilot" in first and "--cpus-per-task=2" in first
    fake.squeue_text = "1001_0|RUNNING|None\n1001_1|PENDING|Resources\n"
    engine.submit([make_spec(tmp_path, f"more-{i}") for i in range(30)])
    second = fake.calls_of("sbatch")[1]
    assert "--array=0-0" in second  # 36 queued want 9 pilots; 2 exist, 3 at most
    fake.squeue_text += "1002_0|PENDING|Resources\n"
    engine.poll([])
    engine.submit([make_spec(tmp_path, "last-1")])
    assert len(fake.calls_of("sbatch")) == 2  # at the maximum: no more pilots


def test_submissions_ask_slurm_about_pilots_only_while_pilots_are_missing(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    # The many runs of a manager's pool submit and poll every tick: Slurm is asked
    # at once for a new backlog while pilots are missing, else every poll_interval_s.
    pilots = PilotSettings(max_pilots=3, jobs_per_pilot=4)
    engine = _engine(fake, tmp_path, mode="pilot", poll_interval_s=3600.0, pilot=pilots)
    engine.submit([make_spec(tmp_path, f"a-{i}") for i in range(4)])
    assert len(fake.calls_of("squeue")) == 1 and "--array=0-0" in fake.calls_of("sbatch")[0]
    fake.squeue_text = "1001_0|RUNNING|None\n"
    engine.submit([make_spec(tmp_path, f"b-{i}") for i in range(8)])  # 1 pilot of 3
    assert len(fake.calls_of("squeue")) == 2 and "--array=0-1" in fake.calls_of("sbatch")[1]
    fake.squeue_text += "1002_0|RUNNING|None\n1002_1|PENDING|Resources\n"
    ids = []
    for run in range(20):  # 20 runs submit and poll: all 3 pilots are there
        ids += engine.submit([make_spec(tmp_path, f"run{run}-{i}") for i in range(2)])
        engine.poll(ids)
    assert len(fake.calls_of("squeue")) == 2 and len(fake.calls_of("sbatch")) == 2


def test_pilots_of_an_engine_before_a_restart_count_against_the_maximum(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    beats = tmp_path / "slurm" / "pilot" / "pilots"
    beats.mkdir(parents=True)
    # A killed manager's pilots: 900_0 still works, 900_1 exited, 899_0 long silent.
    (beats / "900_0.json").write_text(json.dumps({"pilot": "900_0", "state": "running"}))
    (beats / "900_1.json").write_text(json.dumps({"pilot": "900_1", "state": "exited"}))
    (beats / "899_0.json").write_text(json.dumps({"pilot": "899_0", "state": "running"}))
    old = time.time() - 3600
    os.utime(beats / "899_0.json", (old, old))
    fake.squeue_text = "900_0|RUNNING|None\n900_1|COMPLETED|None\n899_0|RUNNING|None\n"
    engine = _pilot_engine(fake, tmp_path)  # the restarted manager's engine, 3 at most
    engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(40)])
    [sbatch] = fake.calls_of("sbatch")
    assert "--array=0-1" in sbatch  # 2 new pilots beside the one still working
    engine.close()
    assert (beats / "1001_0.stop").exists() and (beats / "1001_1.stop").exists()
    assert not (beats / "900_0.stop").exists()  # not its own: it ends when idle


def test_a_pilot_engine_forgets_ended_jobs_and_still_answers_for_them(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    # One engine serves every group of a long-lived manager: what it keeps in memory
    # must not grow with the jobs that ended.
    engine = _pilot_engine(fake, tmp_path)
    queue = tmp_path / "slurm" / "pilot"
    ids = engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(200)])
    assert engine.jobs_held == 200
    for task in ids[:198]:  # pilots ran them
        (queue / "queued" / f"{task}.json").unlink()
        (queue / "done" / f"{task}.json").write_text(
            JobStatus(engine_id=task, state=JobState.SUCCEEDED, exit_code=0).model_dump_json()
        )
    statuses = engine.poll(ids)
    assert [s.state for s in statuses] == [JobState.SUCCEEDED] * 198 + [JobState.SUBMITTED] * 2
    assert engine.jobs_held == 2
    assert engine.poll(ids[:1])[0].state is JobState.SUCCEEDED  # asked again: the same
    queued, held = ids[198:]
    (queue / "queued" / f"{held}.json").rename(queue / "claimed" / f"{held}@900_0.run")
    engine.cancel([queued, held])
    assert [s.state for s in engine.poll([queued, held])] == [JobState.CANCELLED] * 2
    assert engine.jobs_held == 1  # the one a pilot still has to stop
    engine.forget([queued, held])
    assert engine.jobs_held == 0


def test_jobs_of_a_pilot_that_died_fail_with_its_failure(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _pilot_engine(fake, tmp_path)
    [task] = engine.submit([make_spec(tmp_path, "ok-1")])
    queue = tmp_path / "slurm" / "pilot"
    # pilot 1001_0 took the job and started it, then its node failed
    (queue / "queued" / f"{task}.json").rename(queue / "claimed" / f"{task}@1001_0.run")
    fake.squeue_text = "1001_0|RUNNING|None\n"
    [status] = engine.poll([task])
    assert status.state is JobState.RUNNING
    fake.squeue_text = "1001_0|NODE_FAIL|NodeDown\n"
    time.sleep(0.01)  # past poll_interval_s: the engine asks Slurm again
    [status] = engine.poll([task])
    assert status.state is JobState.FAILED and status.failure is FailureKind.NODE_FAILURE
    assert "1001_0" in (status.message or "")
    assert not list((queue / "claimed").iterdir())  # nothing left claimed


@pytest.mark.parametrize("pilot_state", ["CANCELLED|None", "FAILED|NonZeroExitCode"])
def test_jobs_of_a_pilot_killed_under_them_fail_as_a_lost_worker(
    fake: FakeSlurm, tmp_path: Path, pilot_state: str
) -> None:
    engine = _pilot_engine(fake, tmp_path)
    [task] = engine.submit([make_spec(tmp_path, "ok-1")])
    queue = tmp_path / "slurm" / "pilot"
    (queue / "queued" / f"{task}.json").rename(queue / "claimed" / f"{task}@1001_0.run")
    fake.squeue_text = "1001_0|RUNNING|None\n"
    assert engine.poll([task])[0].state is JobState.RUNNING
    fake.squeue_text = f"1001_0|{pilot_state}\n"  # scancel, or the pilot killed
    time.sleep(0.01)
    [status] = engine.poll([task])
    assert status.state is JobState.FAILED and status.failure is FailureKind.WORKER_LOST


def test_a_later_engine_finds_finished_pilot_jobs(fake: FakeSlurm, tmp_path: Path) -> None:
    engine = _pilot_engine(fake, tmp_path)
    queued, done = engine.submit([make_spec(tmp_path, "ok-1"), make_spec(tmp_path, "ok-2")])
    queue = tmp_path / "slurm" / "pilot"
    (queue / "queued" / f"{done}.json").unlink()
    (queue / "done" / f"{done}.json").write_text(
        JobStatus(engine_id=done, state=JobState.SUCCEEDED, exit_code=0).model_dump_json()
    )
    later = _pilot_engine(fake, tmp_path)  # a restarted manager's engine
    first, second = later.poll([queued, done])
    assert first.state is JobState.SUBMITTED
    assert second.state is JobState.SUCCEEDED
    [lost] = later.poll(["p000000-00000009"])
    assert lost.failure is FailureKind.LOST


# -- captured outputs of a real Slurm 22.05 (slurm_fixtures/README.txt says how) ---------------


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_every_state_a_real_slurm_printed_is_in_the_table() -> None:
    states = set()
    for name in ("squeue_r_all.txt", "squeue_r_all_after_scancel.txt", "squeue_r_node_fail.txt"):
        states |= {r.state for r in parse_squeue(_fixture(name)).values()}
    for name in ("sacct_engine_fields.txt", "sacct_node_fail.txt"):
        for line in _fixture(name).splitlines():
            states.add(line.split("|")[2 if name == "sacct_node_fail.txt" else 1])
    assert {"COMPLETED", "FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL"} <= {
        s.split(" ")[0] for s in states
    }
    for state in states:
        translate(state)  # raises on a state the table does not know


def test_sbatch_outputs() -> None:
    assert parse_sbatch(_fixture("sbatch_parsable.txt")).isdigit()


def test_a_later_engine_reads_each_ending_from_squeue_and_sacct(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    """Jobs another engine submitted (a restarted manager): no exit files, so their
    states come from squeue, exit codes and peak memory from sacct."""
    fake.squeue_text = _fixture("squeue_r_all.txt") + _fixture("squeue_r_node_fail.txt")
    fake.sacct_text = _fixture("sacct_engine_fields.txt")
    engine = _engine(fake, tmp_path)
    ids = ["390", "392", "393", "394", "406", "407", "408_0", "408_1", "396_7", "900001"]
    got = {s.engine_id: s for s in engine.poll(ids)}
    assert got["390"].state is JobState.SUCCEEDED and got["390"].exit_code == 0
    assert (got["392"].state, got["392"].exit_code) == (JobState.FAILED, 3)
    assert got["393"].exit_code == -9 and "SIGKILL" in (got["393"].message or "")
    assert got["394"].failure is FailureKind.OUT_OF_MEMORY
    assert got["394"].max_rss_mb == pytest.approx(53100 / 1024)
    assert got["406"].state is JobState.CANCELLED and "not by skybatch" in (
        got["406"].message or ""
    )
    assert got["407"].failure is FailureKind.TIMEOUT
    assert got["408_0"].state is JobState.RUNNING
    assert got["408_1"].state is JobState.SUBMITTED
    assert (got["396_7"].state, got["396_7"].exit_code) == (JobState.FAILED, 4)
    assert got["900001"].failure is FailureKind.NODE_FAILURE
    [sacct] = fake.calls_of("sacct")  # one call for every job that finished
    assert sacct[-1].split(",") == sorted(i for i in ids if i not in ("408_0", "408_1"))


def test_sbatch_never_lets_slurm_requeue_on_its_own(fake: FakeSlurm, tmp_path: Path) -> None:
    _engine(fake, tmp_path).submit([make_spec(tmp_path, "ok-1")])
    assert "--no-requeue" in fake.calls_of("sbatch")[0]


def test_pilot_results_older_than_the_retention_are_swept(fake: FakeSlurm, tmp_path: Path) -> None:
    # A manager that runs for months must not keep one result file per job it ran.
    engine = _pilot_engine(fake, tmp_path, done_retention_s=3600.0)
    [task] = engine.submit([make_spec(tmp_path, "ok-0")])
    pilots = engine._pilots
    assert pilots is not None
    old, recent = pilots.dirs.done / "p-old.json", pilots.dirs.done / f"{task}.json"
    for path in (old, recent):
        path.write_text(JobStatus(engine_id=path.stem, state=JobState.SUCCEEDED).model_dump_json())
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    pilots._checked_at = pilots._swept_at = -math.inf  # as at the next periodic check
    engine.poll([task])
    assert not old.exists() and recent.exists()
    assert engine.poll([task])[0].state == JobState.SUCCEEDED  # a kept result still answers


def test_per_job_mode_never_holds_more_than_max_jobs_in_slurm(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    # max_jobs is the most skybatch jobs in Slurm, across every array of every run: a
    # scheduler (and the manager's pool, through the same engine_capacity) hands Slurm
    # no more, where a local engine gets jobs queued ahead of its workers.
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "run"))
    from schedulerworld import job_node, job_spec, new_run

    from skybatch.engines.base import engine_capacity
    from skybatch.graph.workflow import Workflow
    from skybatch.run.scheduler import Scheduler, SchedulerHooks

    engine = _engine(fake, tmp_path, max_jobs=5)
    assert engine_capacity(engine.capabilities) == 5
    pilots = _pilot_engine(fake, tmp_path / "p", max_pilots=2, cores=2)
    assert engine_capacity(pilots.capabilities) > 4  # pilots pull from a queue ahead
    sessions, run_id = new_run(tmp_path)
    workflow = Workflow.of_jobs("test/run", [job_node(f"ok-{i}") for i in range(12)], pipeline="p")
    scheduler = Scheduler(
        sessions,
        run_id,
        workflow,
        engine,
        SchedulerHooks(lambda job, row: job_spec(tmp_path, job, row)),
    )
    scheduler.create_jobs()
    scheduler.start()
    for _ in range(4):  # Slurm runs every task it was given, none ends
        scheduler.step(engine_capacity(engine.capabilities) - scheduler.n_in_flight)
        fake.squeue_text = "".join(f"{i}|RUNNING|None\n" for i in _submitted(fake))
    assert scheduler.n_in_flight == 5 == len(_submitted(fake))


def _submitted(fake: FakeSlurm) -> list[str]:
    """The array task ids the fake Slurm handed out, from its sbatch calls."""
    ids, next_id = [], 1000
    for argv in fake.calls_of("sbatch"):
        next_id += 1
        size = int(next(a for a in argv if a.startswith("--array=0-"))[10:].split("%")[0]) + 1
        ids += [f"{next_id}_{i}" for i in range(size)]
    return ids
