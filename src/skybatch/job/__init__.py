"""The job wrapper (seed step 11): ``python -m skybatch.job SPEC.json``."""
