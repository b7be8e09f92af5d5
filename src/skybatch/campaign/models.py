"""State tables of campaigns, their steps, groups and the history of every state change.

A **campaign** is a submitted campaign file (its validated configuration is stored as
JSON, so the manager never reads the file again); its **steps** are created at
submission; a step's **groups** when the manager expands the step; each group runs as
one skybatch run whose name (``run_name``) is the Butler output RUN collection.
Every state change writes a **campaign event** in the same transaction (see
:mod:`skybatch.campaign.states`).

The indexes serve the manager's pass (active campaigns, ready groups by campaign) and
the status and report queries (groups per step and state, runs by name).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from skybatch.db.models import Base, utcnow

from .selection import StepSelection, StepSelectionType

__all__ = ["CampaignEventRow", "CampaignGroupRow", "CampaignRow", "CampaignStepRow"]


class CampaignRow(Base):
    """A submitted campaign."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_state", "state"),
        Index("ix_campaigns_uuid", "uuid", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Unique forever (ids restart in a new state database, and two skybatch homes may
    #: share a repository): names the campaign's archive paths and output runs.
    uuid: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid4()))
    name: Mapped[str] = mapped_column(String(256))
    #: The campaign as validated (``Campaign.model_dump(mode="json", exclude_unset=True)``).
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: Archived submission files (backbone paths) and what the end-of-campaign cleanup freed.
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    cleaned_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)


class CampaignStepRow(Base):
    """One step of a campaign; ``position`` is its place in dependency order."""

    __tablename__ = "campaign_steps"
    __table_args__ = (
        UniqueConstraint("campaign_id", "name"),
        Index("ix_campaign_steps_campaign_state", "campaign_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: Operator overrides from ``campaign retry`` (``memory_mb``, ``max_attempts``).
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: What the step's ``select`` kept and dropped when it was expanded (JSON).
    selection: Mapped[StepSelection | None] = mapped_column(StepSelectionType(), default=None)
    expanded_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)


class CampaignGroupRow(Base):
    """A data partition of a step, run as one skybatch run named ``run_name``."""

    __tablename__ = "campaign_groups"
    __table_args__ = (
        UniqueConstraint("step_id", "name"),
        UniqueConstraint("run_name"),
        Index("ix_campaign_groups_campaign_state", "campaign_id", "state"),
        Index("ix_campaign_groups_step_state", "step_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("campaign_steps.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    position: Mapped[int] = mapped_column(Integer)
    #: The group's data query (the step's query ANDed with the group's values).
    data_query: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    run_name: Mapped[str] = mapped_column(String(512))
    #: How often the manager started (or resumed) the group's run.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)


class CampaignEventRow(Base):
    """One state change of a campaign, step or group: the campaign's history."""

    __tablename__ = "campaign_events"
    __table_args__ = (Index("ix_campaign_events_campaign_id", "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    #: ``campaign``, ``step`` or ``group``.
    kind: Mapped[str] = mapped_column(String(16))
    #: What changed: the campaign's name, ``STEP`` or ``STEP/GROUP``.
    what: Mapped[str] = mapped_column(String(512))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    #: The operator action (pause, resume, retry, cancel) or ``None`` for the manager's.
    action: Mapped[str | None] = mapped_column(String(16), default=None)
    #: ``manager``, ``operator`` (the CLI) or ``token:NAME`` (the service's token NAME).
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
