"""The campaign manager inside the service process (``skybatch serve --with-manager``;
seed step 3): a thread that holds the home's manager lock and makes a manager pass
every ``poll_s`` seconds, as ``skybatch manager run`` does in its own process.

Stopping ends the loop after the pass under way (a pass runs what can run now; a
manager is safe to stop at any point and the next one resumes its groups, so a
service that exits mid-pass loses nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack

from skybatch.campaign.lock import manager_lock
from skybatch.campaign.manager import Manager
from skybatch.errors import SkybatchError
from skybatch.settings import Settings

__all__ = ["ManagerThread"]

_log = logging.getLogger(__name__)


class ManagerThread:
    """Runs manager passes in a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_s: float = 10.0,
        factory: Callable[[Settings], Manager] | None = None,
    ) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self._factory = factory or (lambda s: Manager(s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._locks = ExitStack()
        self.passes = 0

    def start(self) -> None:
        """Take the manager lock (refused if another manager runs) and start passes."""
        self._locks.enter_context(manager_lock(self.settings))
        self._thread = threading.Thread(target=self._loop, name="skybatch-manager", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with self._factory(self.settings) as runner:
            while not self._stop.is_set():
                try:
                    runner.run_pass()
                except SkybatchError as exc:
                    _log.error("manager pass failed: %s; trying again in %g s", exc, self.poll_s)
                except Exception:
                    _log.exception("manager pass failed; trying again in %g s", self.poll_s)
                self.passes += 1
                self._stop.wait(self.poll_s)

    def stop(self, wait_s: float = 30.0) -> None:
        """End the passes (after the one under way, waited for up to ``wait_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)
        self._locks.close()
