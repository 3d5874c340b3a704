"""The embedder's plain logic without HTTP: bundle checks at load time, and audio -> embedding + tokens."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encore.artifacts import BundleError, load_bundle
from encore.audio import AudioError, CodebookMismatch, MfccEncoder
from encore.audio.content import ContentComponent
from services.embedder.encode import build_state, embed_audio
from tests.services.embedder.helpers import GOOD_BUNDLE, OTHER_REVISION_BUNDLE, K, tone, wav_bytes


def test_embed_audio_gives_the_transformed_layer_tokens_and_typicality(artifacts_dir: Path) -> None:
    state = build_state(load_bundle(artifacts_dir / GOOD_BUNDLE), MfccEncoder())
    data = wav_bytes(tone(440, 2.0))
    result = embed_audio(data, state, max_seconds=600)
    layers = MfccEncoder().encode(sf.read(io.BytesIO(data), dtype="float32")[0])  # mono, already 22.05 kHz
    expected = state.codebooks.transform.apply(layers)[0]  # the bundle's bounded content transform (one layer)
    np.testing.assert_allclose(result.embedding, expected, rtol=1e-5, atol=1e-5)
    assert result.tokens.tolist() == state.codebooks.tokenize(layers)[0].tolist()
    assert result.embedding.shape == (264,) and result.tokens.shape == (1,) and 0 <= result.tokens[0] < K
    assert result.seconds_used == pytest.approx(2.0) and not result.truncated
    assert result.typicality == pytest.approx(float(state.codebooks.typicality(layers)[0]))
    with pytest.raises(AudioError) as refused:
        embed_audio(wav_bytes(np.zeros(1000, np.float32)), state, max_seconds=600)
    assert refused.value.code == "silent"


def test_bundle_for_another_encoder_revision_or_backend_is_refused(artifacts_dir: Path) -> None:
    with pytest.raises(CodebookMismatch, match="revision"):
        build_state(load_bundle(artifacts_dir / OTHER_REVISION_BUNDLE), MfccEncoder())
    with pytest.raises(CodebookMismatch, match="n_mels"):
        build_state(load_bundle(artifacts_dir / GOOD_BUNDLE), MfccEncoder(n_mels=40))
    bundle = load_bundle(artifacts_dir / GOOD_BUNDLE)
    bundle.manifest["components"][ContentComponent.CONTENT] = {"encoder": "clap"}
    with pytest.raises(BundleError, match="clap"):
        build_state(bundle, MfccEncoder())


def test_track_ids_are_store_keys_only() -> None:
    # EmbedForm is what POST /embed validates its form with (the route's production path).
    from fastapi import UploadFile
    from pydantic import ValidationError

    from services.embedder.schemas import EmbedForm

    upload = UploadFile(io.BytesIO(b""), filename="a.wav")
    assert EmbedForm(file=upload, track_id="upload:8f3a-9c_1.v2").track_id == "upload:8f3a-9c_1.v2"
    for bad in ("", "../x", "/abs", "a b", ".hidden", "x" * 129, "a\nb"):
        with pytest.raises(ValidationError, match="track_id"):
            EmbedForm(file=upload, track_id=bad)


def test_a_stored_upload_keeps_its_pooled_layers_for_a_codebook_refit(artifacts_dir: Path, store) -> None:
    """write_track keeps the upload's pooled layers (encore/track_layers.py) beside the store: tokenizing them gives
    the stored tokens, so new codebooks can re-tokenize the track; delete_track removes them with the track."""
    from encore import track_layers
    from services.embedder.encode import EmbedError, track_meta, write_track

    state = build_state(load_bundle(artifacts_dir / GOOD_BUNDLE), MfccEncoder())
    result = embed_audio(wav_bytes(tone(330, 2.0)), state, max_seconds=600)
    with pytest.raises(EmbedError, match="invalid_track"):  # a refused track keeps no layers either
        write_track(store, "layers-kept", {"genre": "x"}, result, state, overwrite=True)
    assert "layers-kept" not in set(track_layers.read(store.settings.data_dir)["track_id"])
    write_track(store, "layers-kept", track_meta({}), result, state, overwrite=True)
    kept = track_layers.read(store.settings.data_dir).set_index("track_id").loc["layers-kept"]
    assert (kept["encoder"], kept["revision"]) == (state.encoder.name, state.encoder.revision)
    stored = store.get_tracks(["layers-kept"])["layers-kept"]["tokens"]
    assert state.codebooks.tokenize(kept["layers"])[0].tolist() == list(stored)
    np.testing.assert_array_equal(kept["layers"], result.layers)
    store.delete_track("layers-kept")
    assert "layers-kept" not in set(track_layers.read(store.settings.data_dir)["track_id"])
