"""``skybatch pilot``: a warm worker allocation of the Slurm engine's pilot mode.

The Slurm engine submits it with ``sbatch``; it is not meant to be started by hand
(though it can be, for a queue on a filesystem this machine sees).
"""

from __future__ import annotations

from pathlib import Path

import click

from skybatch.cli import values

__all__ = ["pilot"]


@click.command()
@click.option(
    "--queue",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The pilot queue directory (shared filesystem).",
)
@click.option("--cores", type=values.POSITIVE, default=1, show_default=True)
@click.option(
    "--walltime-s", type=values.finite(1.0, max=365 * 86400.0), default=3600, show_default=True
)
@click.option("--idle-timeout-s", type=values.SECONDS, default=60, show_default=True)
@click.option("--end-margin-s", type=values.SECONDS, default=120, show_default=True)
@click.option("--heartbeat-s", type=values.finite(0.1, max=86400.0), default=5, show_default=True)
@click.option("--runner", default="skybatch.job.main:run_job_file", show_default=True)
@click.option("--preload", multiple=True, help="Module the warm workers import once.")
def pilot(
    queue: Path,
    cores: int,
    walltime_s: float,
    idle_timeout_s: float,
    end_margin_s: float,
    heartbeat_s: float,
    runner: str,
    preload: tuple[str, ...],
) -> None:
    """Pull jobs from a Slurm pilot queue and run them in warm workers until idle."""
    from skybatch.engines.slurm.pilot import run_pilot

    ran = run_pilot(
        queue,
        cores=cores,
        walltime_s=walltime_s,
        idle_timeout_s=idle_timeout_s,
        end_margin_s=end_margin_s,
        heartbeat_s=heartbeat_s,
        runner=runner,
        preload=preload,
    )
    click.echo(f"pilot ran {ran} job(s)")
