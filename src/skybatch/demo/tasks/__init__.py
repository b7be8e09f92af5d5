"""PipelineTasks of the demo science pipeline (``pipelines/demo_drp.yaml``)."""
