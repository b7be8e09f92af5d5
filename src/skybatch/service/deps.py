"""Request dependencies of the service (seed step 2): a state-database session per
request, and the bearer token with the role an endpoint needs (no token or an unknown,
revoked or expired one: 401; a role too low: 403)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from skybatch.auth.tokens import Role, TokenInfo, verify_token

__all__ = ["SessionDep", "require"]

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
            if session.dirty:  # its last use, noted at most once a minute
                session.commit()
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
        return token

    return check


Viewer = Annotated[TokenInfo, Depends(require(Role.VIEWER))]
Operator = Annotated[TokenInfo, Depends(require(Role.OPERATOR))]
Admin = Annotated[TokenInfo, Depends(require(Role.ADMIN))]
