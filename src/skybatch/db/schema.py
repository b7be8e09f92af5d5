"""Every table of the state database, gathered for Alembic and schema checks.

Subpackages define their tables on :class:`skybatch.db.models.Base`; importing them
here registers them in one metadata object.
"""

from __future__ import annotations

import skybatch.auth.models as _auth_models  # noqa: F401  (registers tables)
import skybatch.backbone.models as _backbone_models  # noqa: F401
import skybatch.campaign.models as _campaign_models  # noqa: F401
import skybatch.run.models as _run_models  # noqa: F401
from skybatch.db.models import Base

metadata = Base.metadata

__all__ = ["metadata"]
