"""Campaign validation: every job a step asks for fits what the campaign's engine gives.

A step's resources (its policies over the campaign's, per task label and the default
request) are checked against the engine's settings with
:func:`skybatch.run.admission.admission_problems`; a request no allocation could ever
take (in Slurm's pilot mode, a walltime beyond the pilots' own minus the end margin)
would otherwise wait forever once the campaign runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import checks
from .config import Campaign
from .crosschecks import CrossProblem

__all__ = ["engine_admission_problems"]


def engine_admission_problems(campaign: Campaign) -> Iterator[CrossProblem]:
    """One problem per request (where it is written) the engine could never take."""
    from skybatch.engines.errors import EngineError
    from skybatch.run.admission import admission_problems

    engine = campaign.engine
    for index, step in enumerate(campaign.steps):
        policies = campaign.policies_for(step)
        requests = {"": policies.default_resources}
        requests.update({label: policies.resources_for(label) for label in policies.resources})
        try:
            found = list(admission_problems(engine.name, engine.settings, requests))
        except EngineError:  # the settings themselves are reported by the model
            return
        for label, problem in found:
            key = ("resources", label) if label else ("default_resources",)
            own = step.policies.resources if label else None
            written_in_step = (
                (label in own)
                if own is not None
                else ("default_resources" in step.policies.model_fields_set)
            )
            prefix: tuple[str | int, ...] = (
                ("steps", index, "policies") if written_in_step else ("policies",)
            )
            what = f"task {label}" if label else "the default request"
            yield CrossProblem(
                (*prefix, *key),
                checks.Invalid(
                    f"{what} asks for more than the {engine.name} engine can ever give: {problem}",
                    "raise the engine's limit under engine.settings (e.g. pilot: "
                    "{walltime_s: 7200}) or ask for less",
                ),
            )
