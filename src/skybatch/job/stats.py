"""Runtime statistics of a span of work: wall time, CPU seconds and peak memory.

Warm workers of the local engine run many jobs in one long-lived process, so the
kernel's lifetime counters would mix jobs. CPU time is therefore taken as a
difference of :func:`resource.getrusage` readings (self + children), and the peak
resident set size is reset at the start of each span by writing ``5`` to
``/proc/self/clear_refs`` (Linux; ignored where not permitted), then read back from
``VmHWM`` in ``/proc/self/status``. Nested spans (quanta inside a job) report their
peaks to the enclosing span, so resetting for a quantum does not lose the job's peak.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .spec import RuntimeStats

__all__ = ["Meter", "cpu_seconds", "peak_rss_mb", "reset_peak_rss"]

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
