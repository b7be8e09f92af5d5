"""Creating, listing, revoking and checking bearer tokens (seed step 2: who may read
and act on campaigns through the service).

Roles are ordered: a **viewer** reads; an **operator** also acts on campaigns (pause,
resume, retry, cancel); an **admin** also manages tokens. A token is
``sbt_`` + 43 URL-safe characters (256 random bits); only its SHA-256 is stored, so a
leaked state database gives no usable token. A token's name is the actor recorded in
the campaign history for every action taken with it (``token:NAME``).
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from skybatch.db.models import utcnow
from skybatch.errors import InputError, NotFoundError

from .models import TokenRow

__all__ = [
    "CreatedToken",
    "Role",
    "TokenInfo",
    "actor_of",
    "create_token",
    "has_tokens",
    "list_tokens",
    "note_use",
    "revoke_token",
    "verify_token",
]

PREFIX = "sbt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may (admin > operator > viewer)."""
        return self.rank >= needed.rank


class TokenInfo(BaseModel):
    """A token as listed (never its secret)."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    last_used: datetime | None
    active: bool


class CreatedToken(TokenInfo):
    """A new token with its secret, shown only this once."""

    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def actor_of(name: str) -> str:
    """The history's actor for an action taken with the token ``name``."""
    return f"token:{name}"


def _info(row: TokenRow, now: datetime) -> TokenInfo:
    active = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    return TokenInfo(
        name=row.name,
        role=Role(row.role),
        created=row.created_at,
        expires=row.expires_at,
        revoked=row.revoked_at,
        last_used=row.last_used_at,
        active=active,
    )


def create_token(
    session: Session, name: str, role: Role | str, expires_days: int | None = None
) -> CreatedToken:
    """A new token ``name`` with ``role`` (valid ``expires_days`` days, else forever).

    Raises:
        InputError: a bad name, role or expiry, or a token of that name exists.
    """
    if not _NAME.fullmatch(name):
        raise InputError(
            f"bad token name {name!r}",
            where="--name",
            hint="1-64 characters: letters, digits, '.', '_', '@', '-'; starting with a "
            "letter or digit",
        )
    try:
        chosen = Role(role)
    except ValueError:
        raise InputError(
            f"unknown role {role!r}", where="--role", hint="one of viewer, operator, admin"
        ) from None
    if expires_days is not None and expires_days <= 0:
        raise InputError(f"--expires must be positive, got {expires_days}", where="--expires")
    if session.scalar(select(TokenRow.id).where(TokenRow.name == name)) is not None:
        raise InputError(
            f"a token named {name!r} exists",
            where="--name",
            hint="choose another name, or `skybatch token revoke` the old one first "
            "(a revoked token's name stays taken, so histories stay unambiguous)",
        )
    secret = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = TokenRow(
        name=name,
        role=chosen.value,
        token_hash=_hash(secret),
        created_at=now,
        expires_at=None if expires_days is None else now + timedelta(days=expires_days),
    )
    session.add(row)
    session.flush()
    return CreatedToken(**_info(row, now).model_dump(), token=secret)


def list_tokens(session: Session) -> list[TokenInfo]:
    """Every token, oldest first, revoked and expired ones included."""
    now = utcnow()
    return [_info(r, now) for r in session.scalars(select(TokenRow).order_by(TokenRow.id))]


def revoke_token(session: Session, name: str) -> TokenInfo:
    """Revoke the token ``name`` (at once: its next request gets 401).

    Raises:
        NotFoundError: no token has this name.
    """
    row = session.scalar(select(TokenRow).where(TokenRow.name == name))
    if row is None:
        raise NotFoundError(
            f"no token named {name!r}", where=name, hint="`skybatch token list` lists them"
        )
    now = utcnow()
    if row.revoked_at is None:
        row.revoked_at = now
    session.flush()
    return _info(row, now)


def verify_token(session: Session, secret: str) -> TokenInfo | None:
    """The active token whose secret is ``secret``, else None (reads only)."""
    if not secret.startswith(PREFIX):
        return None
    row = session.scalar(select(TokenRow).where(TokenRow.token_hash == _hash(secret)))
    now = utcnow()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return _info(row, now)


def note_use(session: Session, name: str) -> None:
    """Record that the token ``name`` was used now (callers do it at most once a minute,
    in a write transaction of its own)."""
    session.execute(update(TokenRow).where(TokenRow.name == name).values(last_used_at=utcnow()))


def has_tokens(session: Session) -> bool:
    """Whether any active token exists (the service may then listen beyond loopback)."""
    now = utcnow()
    query = select(func.count()).where(
        TokenRow.revoked_at.is_(None),
        (TokenRow.expires_at.is_(None)) | (TokenRow.expires_at > now),
    )
    return bool(session.scalar(query.select_from(TokenRow)))
