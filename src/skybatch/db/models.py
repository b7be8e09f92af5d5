"""SQLAlchemy models of skybatch's own state database.

Schema changes go through Alembic migrations in ``skybatch/db/migrations/versions``;
the naming convention below gives every constraint a deterministic name so that
migrations can alter them on PostgreSQL and in SQLite batch mode alike.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Dialect, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["NAMING_CONVENTION", "Base", "Meta", "Operation", "OperationStatus", "utcnow"]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (stored as such in every table)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no zone and returns naive values; they are UTC by construction (every
    value is written as UTC) and come back marked as such, so comparisons with aware
    times never silently use the machine's local zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of all skybatch state tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class OperationStatus(enum.StrEnum):
    """Status of an operator command in the ``operations`` audit log."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Meta(Base):
    """Key/value facts about this skybatch installation (``skybatch_meta``)."""

    __tablename__ = "skybatch_meta"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Operation(Base):
    """One operator command in the audit log (``operations``)."""

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_started_at", "started_at"),
        CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name="status"
        ),  # named ck_operations_status by the naming convention
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(256))
    arguments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OperationStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
