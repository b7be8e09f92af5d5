"""A full disk is named as the root cause of a failed job and classified as disk_full:
in the job's report (on a real, small tmpfs), in the scheduler's job row, and in the
run report with what to do."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobworld import JobWorld

from skybatch.engines.base import FailureKind
from skybatch.job.causes import EXIT_DISK_FULL, advice_for, error_line, failure_kind
from skybatch.job.main import EXIT_FAILED, run_job

pytestmark = pytest.mark.slow


def _wrapped(code: int) -> Exception:
    """What daf_butler raises when a dataset cannot be written: the OSError two down."""
    try:
        try:
            try:
                raise OSError(code, os.strerror(code), "/scratch/tmp/calexp.fits")
            except OSError as exc:
                raise ValueError("could not write the FITS file") from exc
        except ValueError:
            raise RuntimeError("Failed to serialize dataset calexp@{visit: 1} to /scratch")  # noqa: B904
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_the_root_cause_is_found_anywhere_in_the_chain(code: int) -> None:
    exc = _wrapped(code)
    line = error_line(exc)
    assert line.startswith("RuntimeError: Failed to serialize dataset calexp")
    assert f"[root cause: OSError: [Errno {code}] {os.strerror(code)}" in line
    assert "\n" not in line
    assert failure_kind(exc) is FailureKind.DISK_FULL
    assert "free space" in (advice_for("disk_full") or "")


def test_other_errors_keep_their_line_and_kind() -> None:
    assert error_line(ValueError("bad pixels")) == "ValueError: bad pixels"
    assert failure_kind(ValueError("bad pixels")) is None
    exc = _wrapped(errno.EACCES)
    assert failure_kind(exc) is None
    assert "[root cause: PermissionError: [Errno 13] Permission denied" in error_line(exc)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 48 KiB tmpfs (root may mount one; skipped where that is not allowed)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_job_on_a_full_disk_reports_no_space_left_and_disk_full(
    world: JobWorld, small_disk: Path
) -> None:
    job = f"full-{uuid.uuid4().hex[:6]}"
    inputs = world.inputs(world.isr)
    spec = world.spec(job, [world.isr], inputs=inputs, workdir=str(small_disk / "work"))
    report = run_job(spec)  # its report goes beside the job, off the small disk
    assert (report.status, report.exit_code) == ("failed", EXIT_FAILED)
    assert report.failure == FailureKind.DISK_FULL.value
    assert report.error is not None and "\n" not in report.error
    assert "No space left on device" in report.error, report.error
    assert report.error.startswith("isr {"), report.error
    (quantum,) = report.quanta
    assert quantum.status == "failed" and quantum.failure == "disk_full"


def test_a_short_write_without_errno_is_a_full_disk() -> None:
    """numpy's tofile (astropy FITS data) loses fwrite's errno: the chain says only this."""
    try:
        try:
            raise OSError("16384 requested and 7776 written")
        except OSError as exc:
            raise RuntimeError("Failed to serialize dataset postISRCCD") from exc
    except RuntimeError as exc:
        assert failure_kind(exc) is FailureKind.DISK_FULL
        assert "[root cause: OSError: No space left on device or quota exceeded (a short " in (
            error_line(exc)
        )
    assert failure_kind(OSError("read 3 bytes")) is None


def test_a_disk_too_full_for_the_report_gives_exit_code_28(
    world: JobWorld, small_disk: Path
) -> None:
    with open(small_disk / "filler", "wb", buffering=0) as filler:  # take every byte left
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    job = f"nofit-{uuid.uuid4().hex[:6]}"
    spec = world.spec(
        job,
        [world.isr],
        inputs=world.inputs(world.isr),
        workdir=str(small_disk / "work"),
        report_path=str(small_disk / "report.json"),
    )
    report = run_job(spec)
    assert (report.exit_code, report.failure) == (EXIT_DISK_FULL, "disk_full")
    assert "No space left on device" in (report.error or "")
    assert not (small_disk / "report.json").exists()
