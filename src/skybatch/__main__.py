"""``python -m skybatch``: the ``skybatch`` command (job scripts use it by interpreter)."""

import sys

from skybatch.cli.main import main

sys.exit(main())
