"""The demo campaign: the demo survey processed by a two-step campaign, to the end.

``demo.yaml`` (packaged in ``skybatch.demo/campaigns``) runs step 1 (isr, calibrate,
visitSummary) with one group per visit, then step 2 (coadd), expanded after step 1
over the visits whose ``visitSummary`` PSF size is under the seeing limit.
:func:`run_demo_campaign` submits it for a survey directory and runs the manager
until the campaign ends; ``skybatch demo run`` prints its report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from skybatch.settings import Settings

from .lock import manager_lock
from .manager import Manager
from .submit import submit_campaign

__all__ = ["DEMO_SITES", "DemoCampaignResult", "demo_campaign_path", "run_demo_campaign"]


#: The demo's site file per engine (beside demo.yaml).
DEMO_SITES = {"local": "demo_site.yaml", "slurm": "demo_site_slurm.yaml"}


def demo_campaign_path() -> Path:
    """The packaged demo campaign file."""
    return Path(str(resources.files("skybatch.demo") / "campaigns" / "demo.yaml"))


@dataclass(frozen=True)
class DemoCampaignResult:
    campaign_id: int
    state: str

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


def run_demo_campaign(
    settings: Settings,
    survey_dir: Path,
    *,
    workers: int | None = None,
    seeing_limit_arcsec: float | None = None,
    engine: str = "local",
    say: Callable[[str], None] | None = None,
    progress: Callable[[], object] | None = None,
) -> DemoCampaignResult:
    """Submit the demo campaign over the survey in ``survey_dir`` and run it to its end.

    Args:
        settings: skybatch settings (home, state database).
        survey_dir: A demo survey (``skybatch demo init``).
        workers: Parallel jobs (default: the campaign's, 2).
        seeing_limit_arcsec: Step 2 takes the visits whose PSF FWHM is under this
            (default: the campaign's, 1.6 arcsec).
        engine: ``local`` (this machine) or ``slurm`` (the site file
            ``demo_site_slurm.yaml``: the Slurm cluster this machine submits to).
        say: Receives one line per manager event.
        progress: Called every loop of the manager (a progress display's ``update``).

    Raises:
        InputError: another manager is running for this skybatch home.
    """
    environ = {**os.environ, "DEMO_SURVEY": str(Path(survey_dir).resolve())}
    if workers is not None:
        environ["DEMO_WORKERS"] = str(workers)
    if seeing_limit_arcsec is not None:
        environ["DEMO_SEEING_LIMIT"] = repr(float(seeing_limit_arcsec))
    environ["DEMO_SITE"] = DEMO_SITES[engine]
    with manager_lock(settings):
        submitted = submit_campaign(settings, demo_campaign_path(), environ)
        if say is not None:
            say(f"campaign {submitted.id} ({submitted.name}) submitted")
        with Manager(settings, say=say, progress=progress) as manager:
            state = manager.run_until_done(submitted.id)
    return DemoCampaignResult(submitted.id, state)
