"""Revision 0008: a state database of revision 0007 gets the ``api_tokens`` table and
room for a token's name as the actor of its history (kept events untouched);
downgrading drops the tokens and cuts actors back to 16 characters."""

from __future__ import annotations

import alembic.command
import sqlalchemy as sa

from skybatch.db.engine import _alembic_config, make_engine, upgrade

campaigns = sa.table(
    "campaigns",
    *(sa.column(c) for c in ("id", "uuid", "name", "config", "source_path", "state")),
    *(sa.column(c) for c in ("priority", "summary", "created_at")),
)
events = sa.table(
    "campaign_events",
    *(sa.column(c) for c in ("campaign_id", "kind", "what", "from_state", "to_state")),
    *(sa.column(c) for c in ("action", "actor", "created_at")),
)
LONG = "token:" + "a" * 64


def _event(actor: str) -> dict[str, object]:
    return {
        "campaign_id": 1,
        "kind": "campaign",
        "what": "c",
        "from_state": "running",
        "to_state": "paused",
        "action": "pause",
        "actor": actor,
        "created_at": "2026-12-01 00:00:00",
    }


def _actors(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(sa.select(events.c.actor).order_by(events.c.actor)))


def test_0008_adds_tokens_and_long_actors_and_downgrades(db_url: str) -> None:
    upgrade(db_url, "0007")
    engine = make_engine(db_url)
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
            connection.execute(events.insert().values(**_event("operator")))
        upgrade(db_url)
        assert "api_tokens" in sa.inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.execute(events.insert().values(**_event(LONG)))
        assert _actors(engine) == ["operator", LONG]
        with engine.begin() as connection:
            alembic.command.downgrade(_alembic_config(connection), "0007")
        engine.dispose()
        assert "api_tokens" not in sa.inspect(engine).get_table_names()
        assert _actors(engine) == ["operator", LONG[:16]]
        upgrade(db_url)
        assert "api_tokens" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
