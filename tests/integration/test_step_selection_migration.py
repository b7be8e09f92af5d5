"""Revision 0007: a state database whose steps stored their selection as a sentence
(revisions up to 0006) opens with the selection as data, on SQLite and PostgreSQL;
downgrading writes the sentence back."""

from __future__ import annotations

from pathlib import Path

import alembic.command
import sqlalchemy as sa
from sqlalchemy import select

from skybatch.campaign.models import CampaignStepRow
from skybatch.campaign.selection import SelectionCondition, StepSelection
from skybatch.db.engine import _alembic_config, make_engine, session_factory, upgrade
from skybatch.db.state import open_state_db
from skybatch.settings import load_settings

OLD = (
    "selected 2 of 3 visitSummary of step1 where psf_fwhm_arcsec < 1.6 (all rows): "
    "kept visit=1000, visit=1002; dropped visit=1001"
)
NOTHING = (
    "nothing selected: selected 0 of 1 objectTable of step2 where n > 3 (any rows): "
    "kept none; dropped tract=0,patch=p3"
)
FOREIGN = "whatever an older skybatch wrote"


def _old_database(url: str) -> None:
    """A database at revision 0006 with one campaign and four steps."""
    upgrade(url, "0006")
    engine = make_engine(url)
    campaigns = sa.table(
        "campaigns",
        *(sa.column(c) for c in ("id", "uuid", "name", "config", "source_path", "state")),
        *(sa.column(c) for c in ("priority", "summary", "created_at")),
    )
    steps = sa.table(
        "campaign_steps",
        *(sa.column(c) for c in ("campaign_id", "name", "position", "state", "priority")),
        sa.column("overrides"),
        sa.column("selection"),
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                campaigns.insert().values(
                    id=1,
                    uuid="u-1",
                    name="c",
                    config="{}",
                    source_path="c.yaml",
                    state="running",
                    priority=0,
                    summary="{}",
                    created_at="2026-12-01 00:00:00",
                )
            )
            for position, text in enumerate([OLD, NOTHING, FOREIGN, None]):
                connection.execute(
                    steps.insert().values(
                        campaign_id=1,
                        name=f"s{position}",
                        position=position,
                        state="succeeded",
                        priority=0,
                        overrides="{}",
                        selection=text,
                    )
                )
    finally:
        engine.dispose()


def _selections(url: str) -> list[StepSelection | None]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            rows = session.scalars(select(CampaignStepRow).order_by(CampaignStepRow.position))
            return [row.selection for row in rows]
    finally:
        engine.dispose()


EXPECTED = [
    StepSelection(
        condition=SelectionCondition(
            from_step="step1",
            dataset_type="visitSummary",
            where="psf_fwhm_arcsec < 1.6",
            match="all",
        ),
        kept=[{"visit": 1000}, {"visit": 1002}],
        dropped=[{"visit": 1001}],
    ),
    StepSelection(
        condition=SelectionCondition(
            from_step="step2", dataset_type="objectTable", where="n > 3", match="any"
        ),
        kept=[],
        dropped=[{"tract": 0, "patch": "p3"}],
    ),
    None,
    None,
]


def test_an_old_sqlite_home_opens_with_its_selections_as_data(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    url = settings.database_url()
    Path(str(url).removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _old_database(url)
    open_state_db(settings)  # migrates the embedded database on first use
    assert _selections(url) == EXPECTED
    assert EXPECTED[0] is not None and EXPECTED[0].describe() == OLD


def test_upgrade_and_downgrade_on_both_backends(db_url: str) -> None:
    _old_database(db_url)
    upgrade(db_url)
    assert _selections(db_url) == EXPECTED
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            alembic.command.downgrade(_alembic_config(connection), "0006")
        with engine.connect() as connection:
            texts = connection.execute(
                sa.text("SELECT selection FROM campaign_steps ORDER BY position")
            ).scalars()
            assert list(texts) == [OLD, NOTHING.removeprefix("nothing selected: "), None, None]
    finally:
        engine.dispose()
