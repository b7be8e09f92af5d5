"""Execution engines: run ready jobs (local processes; Slurm and Parsl for clusters)."""
