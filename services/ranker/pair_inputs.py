"""Model inputs of (user, track) fields, encoded per request for its candidates.

Item fields are encoded once per track (encoded_items.py) and user fields once per user (request_inputs.py); a pair
field (`encore.ranker_frame.is_pair_field`: `content_affinity`, the cosine of the listener's content profile and
the track's embedding) depends on both, so neither cache can hold it. It is built by the one frame builder and
encoded by the spec's own encoder, for the request's n candidates only: the same values the full path gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from encore.ranker_frame import TrackFeatures, build_frame, is_pair_field
from encore.schema import FeatureSpec


class PairInputs:
    """The pair fields of a spec: (user_id, user mapping, candidates) -> {field name: (n, ...) encoded values}."""

    def __init__(self, spec: FeatureSpec):
        self.spec = FeatureSpec([f for f in spec.fields if is_pair_field(f)], label=None)

    def encode(self, user_id: str, user: Mapping[str, Any] | None, items: TrackFeatures) -> dict[str, np.ndarray]:
        if not self.spec.fields:
            return {}
        return self.spec.encode(build_frame(self.spec, user_id, user, items))
