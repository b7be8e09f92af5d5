"""End of pipeline (seed steps 12, 14, 15): Butler ingest, catalogs, stage-back, cleanup."""
