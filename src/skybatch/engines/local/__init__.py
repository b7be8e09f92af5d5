"""The local engine: runs jobs on this machine in warm workers or fresh processes."""

from skybatch.engines.local.engine import LocalEngine
from skybatch.engines.local.settings import LocalSettings

__all__ = ["LocalEngine", "LocalSettings"]
