"""Campaigns: the campaign file (pipelines, inputs, calibrations, steps, policies),
its submission and the manager that runs it.

Load a campaign file with :func:`load_campaign`; it returns a validated
:class:`Campaign` or raises :class:`CampaignConfigError` listing every problem with
its file, line and field. The JSON schema of the file is ``campaign.schema.json``
beside this module (``skybatch campaign schema`` prints it).

Running campaigns (imported on use, they need the state database):

- :mod:`~skybatch.campaign.submit`: store a campaign, archive its files as provenance;
- :mod:`~skybatch.campaign.states`: the state table and its one writer;
- :mod:`~skybatch.campaign.manager`: the daemon's pass (advance, expand, run groups),
  with :mod:`~skybatch.campaign.expansion` (groups from the Butler, ``select``),
  :mod:`~skybatch.campaign.execute` (a group as a skybatch run) and
  :mod:`~skybatch.campaign.cleanup` (campaign end);
- :mod:`~skybatch.campaign.actions`: pause, resume, retry, cancel;
- :mod:`~skybatch.campaign.selection`: what a dynamic step kept and dropped, as data;
- :mod:`~skybatch.campaign.render`: the text of list, status, report and history (read
  through :mod:`skybatch.read.campaigns`);
- :mod:`~skybatch.campaign.demo`: the demo campaign, submitted and run to its end.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Calibration, Campaign, Step
    from .errors import CampaignConfigError, Problem
    from .load import load_campaign
    from .policies import Policies

#: Imported on first use: the file models (pydantic) are not needed by the commands
#: that only read the state database (``campaign status``, ``report``), which must
#: answer fast.
_LAZY = {
    "Calibration": ".config",
    "Campaign": ".config",
    "Step": ".config",
    "CampaignConfigError": ".errors",
    "Problem": ".errors",
    "load_campaign": ".load",
    "Policies": ".policies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "Calibration",
    "Campaign",
    "CampaignConfigError",
    "Policies",
    "Problem",
    "Step",
    "load_campaign",
]
