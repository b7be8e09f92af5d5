"""Expansion of pipelines into quantum graphs and WMS-neutral workflows (seed steps 5, 9)."""
