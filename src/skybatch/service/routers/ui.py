"""``/ui``: the web dashboard (seed step 3 as operators watch it): a campaign overview
(a card per campaign with its state and progress); a campaign page (the step graph,
dynamic steps' selections, progress over time, per task CPU time and peak memory,
failures by signature with a retry per signature, groups, history, the operator's
buttons); a run page (jobs by state, a job's attempts and log tail); a failures page
(signatures with example jobs); a backbone page (storage per endpoint). Pages update
live from the server-sent-events stream ``/api/events`` (polling every 5 s while the
stream is down). The figures are SVG drawn here (:mod:`..plots`) from the read layer.

A browser signs in at ``/ui/login`` with a token: the service checks it and keeps it
in the session cookie (HttpOnly, SameSite=Strict; see :mod:`..deps`), so the pages and
their ``EventSource`` read the API as that token and act only as its role allows. The
pages are rendered with the token's name and role (a viewer's page has no operator
buttons); every figure on them is fetched from the API.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from skybatch.auth.tokens import Role, TokenInfo, verify_token
from skybatch.read import dashboard

from .. import plots
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


@router.get("/campaigns/{campaign_id}/failures", response_class=HTMLResponse)
def failures_page(request: Request, campaign_id: int) -> Response:
    return _page(
        request,
        "failures.html",
        title=f"failures of campaign {campaign_id}",
        campaign_id=campaign_id,
    )


@router.get("/backbone", response_class=HTMLResponse)
def backbone_page(request: Request) -> Response:
    return _page(request, "backbone.html", title="data backbone")


@router.get("/runs/{run:path}", response_class=HTMLResponse)
def run_page(request: Request, run: str) -> Response:
    return _page(request, "run.html", title=f"run {run}", run=run)


# -- figures (SVG drawn here from the read layer; the session's token must read) -------------
#: Figures kept per (campaign, figure, quanta version): the quanta of a campaign of
#: 100,000 jobs take the database a tenth of a second or more to aggregate, and a page
#: redraws its figures on every state change it is sent.
_KEPT = 64
_kept: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_kept_lock = threading.Lock()


def _svg(
    request: Request, draw: Callable[[Session], str], key: tuple[Any, ...] | None = None
) -> Response:
    """The figure ``draw`` makes, or the one it made for ``key`` with the same quanta."""
    if cookie_token(request) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in at /ui/login")
    with sessions_of(request)() as session:
        if key is None:
            figure = draw(session)
        else:
            key = (id(request.app), *key, dashboard.quanta_version(session, key[0]))
            with _kept_lock:
                figure = _kept.get(key, "")
            if not figure:
                figure = draw(session)
                with _kept_lock:
                    _kept[key] = figure
                    while len(_kept) > _KEPT:
                        _kept.popitem(last=False)
    return Response(figure, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/campaigns/{campaign_id}/graph.svg")
def graph_figure(request: Request, campaign_id: int) -> Response:
    """The steps as a graph of their dependencies, coloured by state."""
    return _svg(request, lambda s: plots.graph_svg(dashboard.step_graph(s, campaign_id)))


@router.get("/campaigns/{campaign_id}/progress.svg")
def progress_figure(request: Request, campaign_id: int) -> Response:
    """Succeeded and failed quanta over time."""
    return _svg(
        request,
        lambda s: plots.progress_svg(dashboard.campaign_progress(s, campaign_id)),
        (campaign_id, "progress"),
    )


@router.get("/campaigns/{campaign_id}/{what}.svg")
def resources_figure(
    request: Request, campaign_id: int, what: Literal["cpu", "memory"]
) -> Response:
    """Per task box plots of CPU time or peak memory."""
    return _svg(
        request,
        lambda s: plots.boxes_svg(dashboard.task_resources(s, campaign_id), what),
        (campaign_id, what),
    )
