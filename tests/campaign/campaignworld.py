"""Helpers of the campaign tests: paths of the example files and a CLI runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import skybatch.demo
from skybatch.cli.main import main

DATA = Path(__file__).parent / "data"
DEMO_CAMPAIGN = DATA / "demo_campaign.yaml"
DEMO_PIPELINES = Path(skybatch.demo.__file__).parent / "pipelines"


#: Collections of the demo survey that the demo campaign names (see skybatch.demo.survey).
DEMO_COLLECTIONS = {
    "DemoCam/raw/all": "RUN",
    "DemoCam/calib": "CALIBRATION",
    "skymaps": "RUN",
    "refcats": "RUN",
}
DEMO_DEFAULTS = "DemoCam/defaults"


def make_survey_repo(root: Path) -> Path:
    """``root/repo``, a Butler repository with the demo's collections and no data, and an
    empty ``root/refcat.sqlite``: what validating the demo campaign looks at."""
    from lsst.daf.butler import Butler, CollectionType

    Butler.makeRepo(str(root / "repo"))
    with Butler.from_config(str(root / "repo"), writeable=True) as butler:
        for name, kind in DEMO_COLLECTIONS.items():
            butler.collections.register(name, CollectionType[kind])
        butler.collections.register(DEMO_DEFAULTS, CollectionType.CHAINED)
        butler.collections.redefine_chain(DEMO_DEFAULTS, list(DEMO_COLLECTIONS))
    (root / "refcat.sqlite").write_bytes(b"")
    return root


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass
class CampaignCli:
    """Runs ``skybatch --home HOME campaign ...`` in-process and captures its output."""

    home: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str | Path) -> Result:
        self.capsys.readouterr()
        code = main(["--home", str(self.home), "campaign", *map(str, args)])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def assert_no_database(self) -> None:
        """Validation must not create or touch any skybatch database."""
        assert not (self.home / "state.sqlite3").exists()
        assert not self.home.exists() or not any(self.home.rglob("*.sqlite3"))


@dataclass
class SkybatchCli:
    """Runs ``skybatch --home HOME ARGS...`` in-process and captures its output."""

    home: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str | Path | int) -> Result:
        self.capsys.readouterr()
        code = main(["--home", str(self.home), *map(str, args)])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)
