"""``/ui``: the web dashboard (seed step 3 as operators watch it): a campaign overview
(a card per campaign with its state and progress) and a campaign page (steps, failures
by signature with a retry per signature, groups, history, the operator's buttons),
updated live from the server-sent-events stream ``/api/events`` (polling every 5 s
while the stream is down).

A browser signs in at ``/ui/login`` with a token: the service checks it and keeps it
in the session cookie (HttpOnly, SameSite=Strict; see :mod:`..deps`), so the pages and
their ``EventSource`` read the API as that token and act only as its role allows. The
pages are rendered with the token's name and role (a viewer's page has no operator
buttons); every figure on them is fetched from the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from skybatch.auth.tokens import Role, TokenInfo, verify_token

from ..deps import COOKIE, cookie_token, same_origin, sessions_of

__all__ = ["router"]

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
)

_MAX_FORM = 4096


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _render(request: Request, name: str, code: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(base=_base(request), **values)
    return HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store"})


def _page(request: Request, name: str, **values: Any) -> Response:
    """The page for the session's token, or a redirect to the login page."""
    token = cookie_token(request)
    if token is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"{_base(request)}/ui/login?next={quote(target)}", status.HTTP_303_SEE_OTHER
        )
    return _render(request, name, token=token, operator=token.role.allows(Role.OPERATOR), **values)


def _next(request: Request, target: str | None) -> str:
    """Where to go after signing in: a dashboard page of this service, nothing else."""
    base = _base(request)
    if target and target.startswith(f"{base}/ui") and "//" not in target and "\\" not in target:
        return target
    return f"{base}/ui"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _render(request, "login.html", title="sign in", next=_next(request, next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token of the form and keep it in the session cookie."""
    if not same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in from the dashboard's own page")
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "form too large")
    form = parse_qs(body.decode("utf-8", "replace"))
    secret = (form.get("token") or [""])[0].strip()
    target = _next(request, (form.get("next") or [""])[0])
    token: TokenInfo | None = None
    if secret:
        with sessions_of(request)() as session:
            token = verify_token(session, secret)
    if token is None:
        return _render(
            request,
            "login.html",
            status.HTTP_401_UNAUTHORIZED,
            title="sign in",
            next=target,
            error="unknown, revoked or expired token (`skybatch token create` makes one)",
        )
    answer = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    answer.set_cookie(
        COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=f"{_base(request)}/",
    )
    return answer


@router.post("/logout")
def logout(request: Request) -> Response:
    if not same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign out from the dashboard's own page")
    answer = RedirectResponse(f"{_base(request)}/ui/login", status.HTTP_303_SEE_OTHER)
    answer.delete_cookie(COOKIE, path=f"{_base(request)}/")
    return answer


@router.get("", response_class=HTMLResponse)
def campaigns_page(request: Request) -> Response:
    return _page(request, "campaigns.html", title="campaigns")


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: int) -> Response:
    return _page(request, "campaign.html", title=f"campaign {campaign_id}", campaign_id=campaign_id)
