"""services/common/errors.py on its own: what a refusal may say, and what it must not."""

from __future__ import annotations

import json

from encore.artifacts import BundleError
from services.common.errors import bundle_refused, public_message, validation_message


def test_absolute_paths_are_replaced_and_relative_ones_kept() -> None:
    text = "no bundle at /srv/encore/artifacts/b9 (missing manifest.json); file ranker/model.onnx is missing"
    assert public_message(text) == "no bundle at <path> (missing manifest.json); file ranker/model.onnx is missing"
    assert public_message("see http://host:8000/docs") == "see http://host:8000/docs"


def test_a_refused_bundle_keeps_encore_reasons_and_hides_library_messages() -> None:
    own = bundle_refused(BundleError("bundle b2: checksum mismatch for retriever/items.npy"), "b1")
    assert (own.status, own.code, own.extra) == (422, "bundle_refused", {"serving_bundle_id": "b1"})
    assert own.message == "bundle refused: bundle b2: checksum mismatch for retriever/items.npy"
    try:
        try:
            json.loads("{not json")
        except ValueError as exc:
            raise BundleError(f"bundle at /srv/artifacts/b3 could not be loaded: {exc}") from exc
    except BundleError as wrapped:
        hidden = bundle_refused(wrapped, None)
    assert "/srv" not in hidden.message and "Expecting" not in hidden.message
    assert "JSONDecodeError" in hidden.message and "service log" in hidden.message


def test_validation_messages_name_the_field_and_never_the_input() -> None:
    errors = [{"loc": ("body", "y" * 500), "msg": "Extra inputs are not permitted", "input": "z" * 10_000}] * 7
    message = validation_message(errors)
    assert "z" not in message and "y" * 33 not in message and message.endswith("and 2 more")
