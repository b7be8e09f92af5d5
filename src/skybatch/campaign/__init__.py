"""Campaigns: the campaign file (pipelines, inputs, calibrations, steps, policies).

Load a campaign file with :func:`load_campaign`; it returns a validated
:class:`Campaign` or raises :class:`CampaignConfigError` listing every problem with
its file, line and field. The JSON schema of the file is ``campaign.schema.json``
beside this module (``skybatch campaign schema`` prints it).
"""

from __future__ import annotations

from .config import Calibration, Campaign, Step
from .errors import CampaignConfigError, Problem
from .load import load_campaign
from .policies import Policies

__all__ = [
    "Calibration",
    "Campaign",
    "CampaignConfigError",
    "Policies",
    "Problem",
    "Step",
    "load_campaign",
]
