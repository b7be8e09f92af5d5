"""Request dependencies of the service (seed step 2): a state-database session per
request, and the token with the role an endpoint needs (no token or an unknown,
revoked or expired one: 401; a role too low: 403).

A token comes as a bearer header (scripts, the CLI) or as the dashboard's session
cookie (:data:`COOKIE`, set by ``/ui/login``): a browser's ``EventSource`` cannot send
a header, so the live dashboard authenticates with the cookie. The cookie is HttpOnly
and SameSite=Strict, and a request that changes something (not GET, HEAD or OPTIONS)
and is authenticated by the cookie must also come from the service's own origin (its
``Origin``, else its ``Referer``, names the host it was sent to): another site's page
cannot act with an operator's session (cross-site request forgery)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from skybatch.auth.tokens import Role, TokenInfo, note_use, verify_token

__all__ = ["COOKIE", "SessionDep", "cookie_token", "require", "same_origin"]

_log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="a token from `skybatch token create`")

#: the dashboard's session cookie: the token itself (HttpOnly, SameSite=Strict)
COOKIE = "skybatch_token"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        secret: str | None = None
        if credentials is not None and credentials.scheme.lower() == "bearer":
            secret = credentials.credentials
        elif "authorization" not in request.headers and request.cookies.get(COOKIE):
            secret = request.cookies[COOKIE]
            if request.method not in _SAFE_METHODS and not same_origin(request):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    "a dashboard session acts only from the dashboard's own pages (this "
                    "request's Origin or Referer is another site's, or missing); scripts "
                    "send Authorization: Bearer TOKEN",
                )
        if secret is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a bearer token is needed (Authorization: Bearer TOKEN; "
                "`skybatch token create` makes one), or a dashboard session (/ui/login)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        with sessions_of(request)() as session:
            token = verify_token(session, secret)
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


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (else its ``Referer``) names the host it was
    sent to: the browser sent it from one of the service's own pages."""
    host = request.headers.get("host")
    source = request.headers.get("origin") or request.headers.get("referer")
    if not host or not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == host.lower()


def cookie_token(request: Request) -> TokenInfo | None:
    """The active token of the request's dashboard session cookie, else None."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        return None
    with sessions_of(request)() as session:
        token = verify_token(session, secret)
    if token is not None:
        _note_use(sessions_of(request), token)
    return token


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
