"""``POST /api/campaigns/validate`` and ``POST /api/campaigns``: check and submit an
uploaded campaign file with its includes (operator; seed steps 1-2 over HTTP).

The body holds the files by relative path (``{"main": "c.yaml", "files": {"c.yaml":
"...", "site.yaml": "..."}}``) and the ``${VAR}`` values to use (``variables``): the
server's own environment is never substituted into an uploaded file, so a campaign
cannot read the service's secrets into its stored configuration. The files are
written under ``HOME/uploads/<uuid>/`` (removed after a validation; kept for a
submission, whose files are also archived as provenance). Validation loads the
campaign's pipelines, which runs their code: hence the operator role for both.
An invalid campaign is 422 with every problem (file, line, column, field, what to do).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from skybatch.campaign.errors import CampaignConfigError
from skybatch.errors import InputError
from skybatch.settings import Settings

from ..deps import Operator

__all__ = ["router"]

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])

#: The most an upload may hold in all (campaign files are small YAML).
MAX_UPLOAD_BYTES = 4 * 1024 * 1024


class CampaignUpload(BaseModel):
    main: str = Field(description="the campaign file's path among `files`")
    files: dict[str, str] = Field(description="relative path -> text (the file and its includes)")
    variables: dict[str, str] = Field(
        default_factory=dict, description="values of ${VAR} in the files"
    )


class Validated(BaseModel):
    valid: bool
    name: str
    steps: list[str]


class Submitted(BaseModel):
    id: int
    name: str
    steps: list[str]
    provenance: list[str] = Field(description="archived submission files (backbone paths)")


def _write(settings: Settings, upload: CampaignUpload) -> tuple[Path, Path]:
    """The upload written to a new directory; returns (directory, main file)."""
    total = sum(len(text.encode()) for text in upload.files.values())
    if total > MAX_UPLOAD_BYTES:
        raise InputError(
            f"the upload holds {total:,} bytes, more than {MAX_UPLOAD_BYTES:,}",
            where="files",
            hint="campaign files are small YAML; upload the campaign and its includes only",
        )
    if upload.main not in upload.files:
        raise InputError(
            f"main file {upload.main!r} is not among the uploaded files",
            where="main",
            hint="name one of: " + ", ".join(sorted(upload.files)),
        )
    for name in upload.files:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            raise InputError(
                f"bad file name {name!r} in the upload",
                where=f"files[{name!r}]",
                hint="use relative paths inside the upload (no '..', not absolute)",
            )
    root = settings.home / "uploads" / uuid.uuid4().hex
    for name, text in upload.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root, root / upload.main


def _problems(exc: CampaignConfigError, root: Path) -> JSONResponse:
    def place(file: Path) -> str:
        try:
            return str(Path(file).relative_to(root))
        except ValueError:
            return str(file)

    problems: list[dict[str, Any]] = [
        {
            "file": place(p.file),
            "line": p.line,
            "column": p.column,
            "field": p.path,
            "message": p.message,
            "hint": p.hint,
        }
        for p in exc.problems
    ]
    body = {"message": exc.message, "problems": problems}
    return JSONResponse({"detail": body}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


_RESPONSES: dict[int | str, dict[str, str]] = {
    422: {"description": "an invalid campaign: every problem with file, line and field"}
}


@router.post("/validate", response_model=Validated, responses=_RESPONSES)
def validate(upload: CampaignUpload, request: Request, _: Operator) -> Any:
    """Check an uploaded campaign file with its includes, as `campaign validate` does;
    store nothing."""
    from skybatch.campaign.load import load_campaign

    root, main = _write(request.app.state.settings, upload)
    try:
        loaded = load_campaign(main, upload.variables)
    except CampaignConfigError as exc:
        return _problems(exc, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return Validated(valid=True, name=loaded.name, steps=[s.name for s in loaded.steps])


@router.post(
    "", response_model=Submitted, status_code=status.HTTP_201_CREATED, responses=_RESPONSES
)
def submit(upload: CampaignUpload, request: Request, _: Operator) -> Any:
    """Validate, store and archive an uploaded campaign (`campaign submit`); the
    manager then runs it."""
    from skybatch.campaign.load import load_campaign
    from skybatch.campaign.submit import submit_campaign

    settings: Settings = request.app.state.settings
    root, main = _write(settings, upload)
    try:
        loaded = load_campaign(main, upload.variables)
        done = submit_campaign(settings, main, upload.variables, campaign=loaded)
    except CampaignConfigError as exc:
        shutil.rmtree(root, ignore_errors=True)
        return _problems(exc, root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Submitted(id=done.id, name=done.name, steps=done.steps, provenance=done.provenance)
