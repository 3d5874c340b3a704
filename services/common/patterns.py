"""Input rules every service applies the same way: id patterns and the bound on content values.

One place, so the embedder's upload form, the retriever's POST /items and the reload bodies cannot drift.
"""

import re

from encore.audio.transform import MAX_ABS_CONTENT as TRANSFORM_MAX_ABS
from encore.bundle_check import BUNDLE_ID

# Only ever a store key, never a path; the bundle-id alphabet plus ':' for namespaced ids.
TRACK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TRACK_ID_RE = re.compile(TRACK_ID_PATTERN)

# The bundle folder-name rule of encore/bundle_check.py (one definition): a bundle id never becomes a path
# outside the artifacts dir.
BUNDLE_ID_RE = BUNDLE_ID
BUNDLE_ID_PATTERN = BUNDLE_ID.pattern

# Largest |value| a stored content vector may hold: the content transform's own bound (encore/audio/transform.py)
# keeps every real vector inside it; a value beyond it can only come from a broken or hostile client, and one
# huge component would make that track everybody's top candidate (a 3e38 vector scored 3.2e38).
MAX_ABS_CONTENT = TRANSFORM_MAX_ABS
