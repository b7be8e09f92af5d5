"""``/ui``: the web dashboard (seed step 3 as operators watch it): a campaign list and
a campaign page (steps, failures by signature with a retry per signature, groups,
history, the operator's buttons), refreshed every 5 s.

The pages are HTML and script only, served without a token; every figure on them is
fetched from the API with the bearer token the operator pastes once (kept in the
browser's local storage), so the pages show nothing the token may not read and act
only as its role allows.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["router"]

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def _page(request: Request, name: str, **values: object) -> HTMLResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    return HTMLResponse(_templates.get_template(name).render(base=base, **values))


@router.get("", response_class=HTMLResponse)
def campaigns_page(request: Request) -> HTMLResponse:
    return _page(request, "campaigns.html", title="campaigns")


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: int) -> HTMLResponse:
    return _page(request, "campaign.html", title=f"campaign {campaign_id}", campaign_id=campaign_id)
