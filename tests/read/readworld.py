"""The world of the read-layer tests: a state database with real campaign runs."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from skybatch.db.state import open_state_db
from skybatch.demo.driver import pipeline_path
from skybatch.settings import Settings


@dataclass(frozen=True)
class ReadWorld:
    settings: Settings
    survey: Path
    demo_id: int
    oom_id: int

    @contextmanager
    def session(self) -> Iterator[Session]:
        with open_state_db(self.settings)() as session:
            yield session

    def cli_args(self) -> list[str]:
        """``skybatch`` options that point at this world's home and database."""
        return ["--home", str(self.settings.home), "--db-url", self.settings.database_url()]


def oom_campaign(root: Path, survey: Path) -> Path:
    """One visit, calibrate's memory below what it needs and capped there."""
    path = root / "oom.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: oom
            repo: {survey / "repo"}
            inputs: [DemoCam/defaults]
            query: "instrument = 'DemoCam' AND visit = 1000"
            engine: {{workers: 2}}
            policies:
              retries: {{max_attempts: 2, memory_factor: 2.0, memory_cap_mb: 60}}
              resources:
                calibrate: {{memory_mb: 60}}
            steps:
              - name: step1
                pipeline: {pipeline_path()}#step1
                split: {{by: visit}}
            """
        )
    )
    return path
