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

#: Largest integer the state database stores (SQLite INTEGER, PostgreSQL BIGINT).
MAX_DATABASE_INTEGER = 2**63 - 1

#: Digits of the largest id.
MAX_ID_DIGITS = len(str(MAX_DATABASE_INTEGER))

#: Bytes kept for a group's name (``visit_1234``, ``part_0007``) in the paths below.
GROUP_NAME_BYTES = 64

#: Longest campaign or step name, in bytes. A group's work directory is one file name
#: component made of its run, ``CAMPAIGN/ID/STEP/GROUP`` with ``/`` replaced: the
#: campaign and step names share what the id, the group and the separators leave.
MAX_CAMPAIGN_NAME_BYTES = (MAX_NAME_COMPONENT_BYTES - 3 - MAX_ID_DIGITS - GROUP_NAME_BYTES) // 2
MAX_STEP_NAME_BYTES = MAX_CAMPAIGN_NAME_BYTES

#: Longest output run name, in bytes: its work directory is one file name component.
MAX_RUN_NAME_BYTES = MAX_NAME_COMPONENT_BYTES
