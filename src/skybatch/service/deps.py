"""Request dependencies of the service (seed step 2): a state-database session per
request, and the bearer token with the role an endpoint needs (no token or an unknown,
revoked or expired one: 401; a role too low: 403)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from skybatch.auth.tokens import Role, TokenInfo, note_use, verify_token

__all__ = ["SessionDep", "require"]

_log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="a token from `skybatch token create`")


def sessions_of(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_session(request: Request) -> Iterator[Session]:
    """A read session for the request (writes go through ``sessions.begin()``)."""
    with sessions_of(request)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def require(role: Role) -> Callable[..., TokenInfo]:
    """A dependency that admits tokens of ``role`` or above and returns the token."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenInfo:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a bearer token is needed (Authorization: Bearer TOKEN; "
                "`skybatch token create` makes one)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        with sessions_of(request)() as session:
            token = verify_token(session, credentials.credentials)
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown, revoked or expired token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not token.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"token {token.name!r} has role {token.role}; this needs {role} or above",
            )
        _note_use(sessions_of(request), token)
        return token

    return check


def _note_use(sessions: sessionmaker[Session], token: TokenInfo) -> None:
    """Note the token's use at most once a minute, in a transaction of its own; a
    failure to note it (a busy database) does not fail the request."""
    now = datetime.now(UTC)
    if token.last_used is not None and now - token.last_used < timedelta(minutes=1):
        return
    try:
        with sessions.begin() as session:
            note_use(session, token.name)
    except Exception as exc:  # bookkeeping only
        _log.warning("could not note the use of token %r: %s", token.name, exc)


Viewer = Annotated[TokenInfo, Depends(require(Role.VIEWER))]
Operator = Annotated[TokenInfo, Depends(require(Role.OPERATOR))]
Admin = Annotated[TokenInfo, Depends(require(Role.ADMIN))]
