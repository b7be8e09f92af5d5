"""Runtime statistics of a span of work: wall time, CPU seconds and peak memory.

Warm workers of the local engine run many jobs in one long-lived process, so the
kernel's lifetime counters would mix jobs. CPU time is therefore taken as a
difference of :func:`resource.getrusage` readings (self + children), and the peak
resident set size is reset at the start of each span by writing ``5`` to
``/proc/self/clear_refs`` (Linux; ignored where not permitted), then read back from
``VmHWM`` in ``/proc/self/status``. Nested spans (quanta inside a job) report their
peaks to the enclosing span, so resetting for a quantum does not lose the job's peak.

:class:`PhaseClock` answers a different question: where the wall time of a job goes
inside the job wrapper (butler set-up, execution, md5, stage-out, catalog writes...),
so that the next cut of the harness's per-quantum cost is visible. It is two
``perf_counter`` calls per phase, cheap enough to be always on.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .spec import RuntimeStats

__all__ = ["PHASES", "Meter", "PhaseClock", "cpu_seconds", "peak_rss_mb", "reset_peak_rss"]

_log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel refuses."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB since the last reset (or its start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    # No /proc (macOS) or an odd kernel: the lifetime peak is the best there is.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


class Meter:
    """Measures one span (``with Meter() as m: ...``; then ``m.stats``).

    Args:
        parent: The enclosing span; it is told this span's peak (and the peak reached
            just before this span reset the counter), so its own peak stays correct.
    """

    def __init__(self, parent: Meter | None = None) -> None:
        self.parent = parent
        self._peak_mb = 0.0
        self._start = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self._cpu0 = cpu_seconds()
        self.stats: RuntimeStats | None = None

    def observe(self, peak_mb: float) -> None:
        """Record a peak reached inside this span (by a nested span)."""
        self._peak_mb = max(self._peak_mb, peak_mb)

    def start(self) -> Meter:
        if self.parent is not None:
            self.parent.observe(peak_rss_mb())
        if not reset_peak_rss():
            _log.debug("cannot reset the peak RSS; max_rss_mb is the process lifetime peak")
        self._peak_mb = 0.0
        self._start = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self._cpu0 = cpu_seconds()
        return self

    def stop(self) -> RuntimeStats:
        wall = time.perf_counter() - self._t0
        cpu = cpu_seconds() - self._cpu0
        peak = max(self._peak_mb, peak_rss_mb())
        if self.parent is not None:
            self.parent.observe(peak)
        self.stats = RuntimeStats(
            start=self._start,
            end=datetime.now(UTC),
            wall_s=round(wall, 6),
            cpu_s=round(cpu, 6),
            max_rss_mb=round(peak, 3),
        )
        return self.stats

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


#: The job wrapper's phases, in the order they run (``JobReport.phases_s`` keys).
PHASES: tuple[str, ...] = (
    "spec",  # read and validate the spec file
    "start",  # job provenance (host, packages, environment), workdir, job log
    "graph",  # read this job's quanta from the graph file
    "butler_config",  # the job's butler.yaml
    "stage_in",  # inputs' catalog records, link or copy, replica checks recorded
    "butler_setup",  # a quantum-backed butler per quantum
    "execute",  # the task, with its reads and writes through that butler
    "butler_provenance",  # what each quantum's butler read and wrote
    "md5",  # size and md5 of every output
    "metadata",  # science metadata of every output
    "junk",  # the junk tarball
    "stage_out",  # verified copies to the endpoint, one sync
    "catalog",  # outputs and provenance in the state database (one transaction)
    "report",  # the report built (its own writing is not in it)
)


class PhaseClock:
    """Wall seconds per named phase of a job, summed when a phase runs more than once
    (e.g. ``execute`` for each quantum of a job)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def rounded(self) -> dict[str, float]:
        """Seconds per phase to the microsecond, known phases in :data:`PHASES` order."""
        order = {name: i for i, name in enumerate(PHASES)}
        names = sorted(self.seconds, key=lambda n: (order.get(n, len(order)), n))
        return {name: round(self.seconds[name], 6) for name in names}
