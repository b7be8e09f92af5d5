"""The Slurm engine: per-job arrays or warm pilot allocations (see :mod:`.engine`)."""

from .engine import SlurmEngine
from .settings import PilotSettings, SlurmSettings

__all__ = ["PilotSettings", "SlurmEngine", "SlurmSettings"]
