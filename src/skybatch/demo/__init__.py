"""The demo survey: a synthetic DemoCam survey in a real Butler repository.

``survey`` builds the repository (dimension records, raw images, certified
calibrations, reference catalog); ``tasks`` holds the demo science pipeline's
PipelineTasks; ``image`` and ``formatters`` provide skybatch's own image storage class.
"""
