"""State tables of runs, their jobs, job attempts and executed quanta."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from skybatch.db.models import Base, utcnow

__all__ = ["JobAttemptRow", "JobRow", "QuantumRunRow", "RunRow", "RunState"]


class RunState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)  # the Butler output run
    repo: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[str] = mapped_column(Text)
    input_collections: Mapped[list[Any]] = mapped_column(JSON, default=list)
    data_query: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str | None] = mapped_column(String(128), default=None)
    engine: Mapped[str] = mapped_column(String(64), default="local")
    workdir: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=RunState.PENDING.value)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "name"),
        Index("ix_jobs_run_state", "run_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    label: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The attempt after which a failure holds the job (None: the run's policy);
    # raised when an operator resumes a run with held jobs.
    attempt_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    memory_mb: Mapped[int] = mapped_column(Integer)  # current request (escalated after OOM)
    cores: Mapped[int] = mapped_column(Integer, default=1)
    walltime_s: Mapped[int] = mapped_column(Integer)
    n_quanta: Mapped[int] = mapped_column(Integer, default=1)
    engine_id: Mapped[str | None] = mapped_column(String(128), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    failure: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobAttemptRow(Base):
    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    engine_id: Mapped[str | None] = mapped_column(String(128), default=None)
    state: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str | None] = mapped_column(String(32), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    memory_mb: Mapped[int] = mapped_column(Integer)
    max_rss_mb: Mapped[float | None] = mapped_column(Float, default=None)
    cpu_s: Mapped[float | None] = mapped_column(Float, default=None)
    report_path: Mapped[str | None] = mapped_column(Text, default=None)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class QuantumRunRow(Base):
    """One executed quantum, from the job reports."""

    __tablename__ = "quantum_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "quantum_id", "attempt"),
        Index("ix_quantum_runs_run_label", "run_id", "task_label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    quantum_id: Mapped[str] = mapped_column(String(36))
    task_label: Mapped[str] = mapped_column(String(256))
    data_id: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16))
    start: Mapped[datetime | None] = mapped_column(default=None)
    end: Mapped[datetime | None] = mapped_column(default=None)
    cpu_s: Mapped[float | None] = mapped_column(Float, default=None)
    max_rss_mb: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
