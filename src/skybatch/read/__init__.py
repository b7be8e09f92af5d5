"""The read layer under the CLI's read commands and the REST service (seed steps 3, 6-16
as operators see them): read models (:mod:`~skybatch.read.models`, pydantic) and
repository functions that take a SQLAlchemy session and return them, per domain:

- :mod:`~skybatch.read.campaigns`: campaign list, status, report, history;
- :mod:`~skybatch.read.runs`: run list, run report, a run's jobs;
- :mod:`~skybatch.read.backbone`: endpoints, usage, a file's provenance.

The layer only reads. It lives beside the domain packages rather than in a service
package so that the CLI uses it without importing a web framework, and the service's
routers will return exactly what ``--json`` prints (``model_dump(mode="json")``).
"""
