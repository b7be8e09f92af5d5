"""``/api/tokens``: list, create and revoke bearer tokens (admin; seed step 2)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from skybatch.auth import tokens
from skybatch.auth.tokens import CreatedToken, Role, TokenInfo

from ..deps import Admin, SessionDep, sessions_of

__all__ = ["router"]

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field(description="who uses it; recorded as the actor of its actions")
    role: Role
    expires_days: int | None = Field(None, gt=0, description="valid this many days")


@router.get("", response_model=list[TokenInfo])
def list_tokens(session: SessionDep, _: Admin) -> list[TokenInfo]:
    """Every token (never its secret)."""
    return tokens.list_tokens(session)


@router.post("", response_model=CreatedToken, status_code=status.HTTP_201_CREATED)
def create_token(body: NewToken, request: Request, _: Admin) -> CreatedToken:
    """A new token; its secret is in this answer only."""
    with sessions_of(request).begin() as session:
        return tokens.create_token(session, body.name, body.role, body.expires_days)


@router.delete("/{name}", response_model=TokenInfo)
def revoke_token(name: str, request: Request, _: Admin) -> TokenInfo:
    """Revoke the token ``name`` (its next request gets 401)."""
    with sessions_of(request).begin() as session:
        return tokens.revoke_token(session, name)
