"""``skybatch campaign submit``: store a validated campaign and archive its files (seed
steps 2, 4).

The campaign file is validated first (nothing is written when it is invalid). Then
the campaign and its steps are stored in one transaction, and the files it was read
from (the campaign file and its includes, as written) plus the validated
configuration as JSON are copied into the archive under
``skybatch/provenance/campaigns/<uuid>/``, verified, registered in the backbone
catalog and linked to a ``campaign`` activity. Each submission is a new campaign with
its own id and UUID. Ids restart in a new state database and two skybatch homes may
share a repository, so what lands in the repository is named by the UUID: the
provenance directory and the output runs (``<campaign>/<id>-<uuid prefix>/<step>/
<group>``) never collide with another campaign's, and the archive refuses to
overwrite a file with other content whatever happens.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from skybatch.backbone.catalog import FileRecord
from skybatch.backbone.models import EdgeRelation
from skybatch.backbone.service import Backbone, SiteRequest
from skybatch.backbone.transfer import write_verified
from skybatch.db.models import utcnow
from skybatch.settings import Settings

from .config import Campaign
from .load import load_campaign
from .models import CampaignEventRow, CampaignRow, CampaignStepRow
from .source import read_source
from .states import Actor, State

__all__ = [
    "PROVENANCE_PREFIX",
    "SubmittedCampaign",
    "campaign_from_row",
    "ensure_archive",
    "run_name",
    "submit_campaign",
]

PROVENANCE_PREFIX = "skybatch/provenance/campaigns"


@dataclass(frozen=True)
class SubmittedCampaign:
    id: int
    name: str
    steps: list[str]
    provenance: list[str]


#: Hex digits of the campaign's UUID in its run names (48 bits: a collision between
#: two campaigns of one repository is vanishingly unlikely, and refused if it happens).
RUN_UUID_DIGITS = 12


def run_name(campaign: str, campaign_id: int, step: str, group: str, campaign_uuid: str) -> str:
    """The output RUN collection of a group: unique per submission and per repository.

    The id is there for people (``campaign status ID``); the UUID's prefix keeps the
    name unique when ids restart (new state database, another skybatch home).
    """
    tag = campaign_uuid.replace("-", "")[:RUN_UUID_DIGITS]
    return f"{campaign}/{campaign_id}-{tag}/{step}/{group}"


def campaign_from_row(row: CampaignRow) -> Campaign:
    """The validated campaign stored at submission (no file is read again)."""
    return Campaign.model_validate(row.config)


def submit_campaign(
    settings: Settings,
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    campaign: Campaign | None = None,
) -> SubmittedCampaign:
    """Validate the campaign file ``path``, store it, archive its files; see the module.

    ``campaign`` is the file already validated by :func:`load_campaign` (with the same
    ``environ``), to validate it only once.

    Raises:
        CampaignConfigError: the file is invalid (nothing is written).
        InputError: the backbone's archive is rooted at another repository.
    """
    path = Path(path)
    if campaign is None:
        campaign = load_campaign(path, environ)
    _, source = read_source(path, environ)
    files = _source_files(source.file, source.marks)
    backbone = Backbone.from_settings(settings)
    archive = ensure_archive(backbone, campaign.repo, site=_site(settings, path, campaign))
    sessions = backbone.catalog.sessions
    config = campaign.model_dump(mode="json", exclude_unset=True)
    order = {step.name: i for i, step in enumerate(campaign.ordered_steps())}
    with sessions.begin() as session:
        row = CampaignRow(
            name=campaign.name,
            config=config,
            source_path=str(path.absolute()),
            state=State.WAITING.value,
            priority=campaign.policies.priority,
            summary={},
        )
        session.add(row)
        session.flush()
        campaign_id, campaign_uuid = row.id, row.uuid
        session.execute(
            insert(CampaignStepRow),
            [
                {
                    "campaign_id": campaign_id,
                    "name": step.name,
                    "position": order[step.name],
                    "state": State.WAITING.value,
                    "priority": campaign.policies_for(step).priority,
                    "overrides": {},
                }
                for step in campaign.steps
            ],
        )
        session.add(
            CampaignEventRow(
                campaign_id=campaign_id,
                kind="campaign",
                what=campaign.name,
                from_state="",
                to_state=State.WAITING.value,
                actor=Actor.OPERATOR.value,
                reason=f"submitted {path}",
                created_at=utcnow(),
            )
        )
    try:
        archived = _archive(backbone, archive, campaign_id, campaign_uuid, campaign, files, config)
    except BaseException:
        with sessions.begin() as session:  # no campaign without its provenance
            session.execute(delete(CampaignRow).where(CampaignRow.id == campaign_id))
        raise
    with sessions.begin() as session:
        live = session.get(CampaignRow, campaign_id)
        assert live is not None
        live.summary = {**live.summary, "provenance": archived}
    return SubmittedCampaign(
        campaign_id, campaign.name, [s.name for s in campaign.ordered_steps()], archived
    )


def ensure_archive(backbone: Backbone, repo: Path, site: SiteRequest | None = None) -> str:
    """The archive endpoint (created at the repository if there is none yet), after
    the campaign's site root is checked (:meth:`Backbone.bootstrap`; the site endpoint
    itself is made by the first group's run)."""
    endpoints = backbone.bootstrap(
        repo, subject="the campaign's repository", where="repo", site=site, make_site=False
    )
    assert endpoints.archive is not None
    return endpoints.archive


def _site(settings: Settings, path: Path, campaign: Campaign) -> SiteRequest:
    """The campaign's site, as checked before anything is written: the site cache never
    overlaps the repository."""
    return SiteRequest(
        campaign.site.name,
        campaign.site.root,
        settings.home / "site-cache",
        where=f"{path}: site.root",
    )


def _source_files(main: Path, marks: Mapping[Any, Any]) -> list[Path]:
    """The campaign file first, then every included file that contributed a field."""
    found: dict[Path, None] = {main.absolute(): None}
    for key_mark, value_mark in marks.values():
        for mark in (key_mark, value_mark):
            if mark is not None:
                found.setdefault(Path(mark.file).absolute(), None)
    return list(found)


def _archive(
    backbone: Backbone,
    archive: str,
    campaign_id: int,
    campaign_uuid: str,
    campaign: Campaign,
    files: list[Path],
    config: dict[str, Any],
) -> list[str]:
    contents: dict[str, tuple[bytes, str]] = {}
    for index, file in enumerate(files):
        name = file.name if index == 0 else f"include-{index}-{file.name}"
        contents[name] = (file.read_bytes(), "skybatch_campaign_file")
    validated = json.dumps(config, indent=2, sort_keys=True).encode()
    contents["campaign-validated.json"] = (validated, "skybatch_campaign_config")
    endpoint = backbone.endpoint(archive)
    records = []
    for name, (data, dataset_type) in contents.items():
        logical = f"{PROVENANCE_PREFIX}/{campaign_uuid}/{name}"
        size, md5 = len(data), hashlib.md5(data).hexdigest()
        write_verified(io.BytesIO(data), endpoint, logical, (size, md5))
        records.append(
            FileRecord(
                logical,
                size,
                md5,
                dataset_type=dataset_type,
                run=f"{campaign.name}/{campaign_uuid}",
                producer="campaign-submit",
            )
        )
    ids = backbone.catalog.register(records, archive)
    activity = backbone.catalog.add_activity(
        "campaign",
        f"{campaign.name}/{campaign_uuid}",
        {"campaign_id": campaign_id, "campaign_uuid": campaign_uuid},
    )
    backbone.catalog.add_edges(EdgeRelation.USED, list(ids.values()), activity_id=activity)
    return [r.path for r in records]
