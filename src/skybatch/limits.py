"""Limits on what skybatch accepts as input, in one place.

Each limit keeps a bad or hostile input from hanging or crashing skybatch: it is
refused with a message that names the limit instead.
"""

from __future__ import annotations

#: Largest campaign file (and each file it includes), in bytes.
MAX_CAMPAIGN_FILE_BYTES = 16 * 1024 * 1024

#: Deepest nesting of mappings and lists in a campaign file.
MAX_YAML_DEPTH = 64

#: Most aliases (``*name``) in one campaign file.
MAX_YAML_ALIASES = 10_000

#: Most values (keys, scalars, mappings, lists) in one campaign file once its aliases
#: are expanded: a 50,000-step campaign has about 500,000.
MAX_YAML_NODES = 2_000_000

#: Most problems of one campaign file printed (all are counted).
MAX_PROBLEMS_SHOWN = 100

#: Most names listed in one hint ("use one of: ..."); the rest are counted.
MAX_HINT_NAMES = 10

#: Longest file name component on the file systems skybatch writes to, in bytes.
MAX_NAME_COMPONENT_BYTES = 255

#: Largest integer the state database stores (SQLite and PostgreSQL BIGINT).
MAX_DATABASE_INTEGER = 2**63 - 1
