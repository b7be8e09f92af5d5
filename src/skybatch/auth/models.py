"""The ``api_tokens`` table: one row per bearer token of the operations service
(seed step 2). Only the SHA-256 of the secret is stored; the secret itself is shown
once, when the token is created."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from skybatch.db.models import Base, utcnow

__all__ = ["TokenRow"]


class TokenRow(Base):
    """A bearer token: its name (the actor in campaign histories), role and hash."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    #: Hex SHA-256 of the secret (the secret is never stored).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
