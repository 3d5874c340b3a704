"""Encoder selection in the embedder: a tiny random-weight MuQ end to end, a missing encoder answered with
503 encoder_unavailable naming what is missing, and codebooks of another encoder refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from encore.artifacts import BundleBuilder
from encore.audio import Codebooks, content_revision, decode_audio, get_encoder
from encore.audio.random_weights import write_random_weights
from encore.settings import EmbedderSettings
from services.embedder.encode import CODEBOOKS_COMPONENT, CONTENT_COMPONENT
from tests.services.embedder.helpers import AUTH, GOOD_BUNDLE, post_embed, tone, wav_bytes

MakeClient = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(scope="module")
def muq_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(weights_dir with a tiny MuQ, artifacts_dir whose CURRENT bundle holds codebooks fit on it)."""
    weights = tmp_path_factory.mktemp("weights")
    write_random_weights(weights, "muq", size="tiny", seed=0)
    encoder = get_encoder("muq", weights, runtime="torch")
    clips = [tone(f, 3.0, bpm=b, rate=24_000) for f in (110, 220, 440) for b in (90, 150)]
    layers = np.stack([encoder.encode(c) for c in clips])  # (6, 3, 32)
    info = encoder.describe()
    books = Codebooks.fit(layers, encoder_info=info, k=4, seed=0)
    artifacts = tmp_path_factory.mktemp("artifacts")
    with BundleBuilder(artifacts, "muq-1", make_current=True) as builder:
        books.save(builder.path / "codebooks")
        builder.manifest["components"] = {
            CODEBOOKS_COMPONENT: {"dir": "codebooks", "encoder": info},
            CONTENT_COMPONENT: {"encoder": "muq", "dense_layer": "last", "standardize": True},
        }
    return weights, artifacts


def test_a_configured_encoder_that_is_not_installed_is_a_503_naming_the_missing_files(
    make_client: MakeClient, tmp_path: Path
) -> None:
    with make_client(encoder="muq", weights_dir=tmp_path) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["encoder"] is None
        assert "lacks config.json, model.safetensors" in ready.json()["detail"]["encoder_error"]
        assert str(tmp_path) not in ready.text  # the host's paths go to the log only
        response = post_embed(client, wav_bytes(tone(440, 1.0)), track_id="enc:missing")
        detail = response.json()["detail"]
        assert response.status_code == 503 and detail["code"] == "encoder_unavailable"
        assert "encoder 'muq' is not installed" in detail["message"] and "model.safetensors" in detail["message"]
        reload = client.post("/admin/reload", headers=AUTH)
        assert reload.status_code == 503 and reload.json()["detail"]["code"] == "encoder_unavailable"
    with pytest.raises(ValidationError, match="encoder_runtime"):  # a typo stops the service at start
        EmbedderSettings(encoder_runtime="tensorrt")


def test_muq_embedder_reports_encoder_and_revision_and_stores_what_the_encoder_computes(
    make_client: MakeClient, muq_world: tuple[Path, Path]
) -> None:
    weights, artifacts = muq_world
    with make_client(artifacts_dir=artifacts, encoder="muq", weights_dir=weights, encoder_runtime="torch") as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["encoder_runtime"] == "torch"
        audio = wav_bytes(tone(330, 12.0))  # 22.05 kHz: resampled to MuQ's 24 kHz
        response = post_embed(client, audio, track_id="enc:muq:1")
        assert response.status_code == 200, response.text
        body = response.json()
    encoder = get_encoder("muq", weights, runtime="torch")
    books = Codebooks.load(artifacts / "muq-1" / "codebooks", encoder_info=encoder.describe())
    assert body["encoder"] == "muq" and (body["n_layers"], body["dim"], body["n_tokens"]) == (3, 32, 3)
    manifest = json.loads((artifacts / "muq-1" / "manifest.json").read_text())
    books_sha = manifest["files"]["codebooks/codebooks.safetensors"]
    assert body["encoder_revision"] == content_revision(encoder.revision, books_sha)
    layers = encoder.encode_decoded(decode_audio(audio, max_seconds=None))
    np.testing.assert_allclose(body["embedding"], books.embedding(layers)[0], rtol=1e-4, atol=1e-4)
    assert body["tokens"] == books.tokenize(layers)[0].tolist()


def test_codebooks_fit_on_another_encoder_are_refused(make_client: MakeClient, muq_world: tuple[Path, Path]) -> None:
    """The session's CURRENT bundle was fit on MFCC: a MuQ embedder must not load it, nor any MFCC bundle."""
    weights, _ = muq_world
    with make_client(encoder="muq", weights_dir=weights, encoder_runtime="torch") as client:
        ready = client.get("/readyz").json()["detail"]
        assert ready["encoder"] == "muq" and ready["bundle_id"] is None
        response = client.post("/admin/reload", json={"bundle_id": GOOD_BUNDLE}, headers=AUTH)
        detail = response.json()["detail"]
        assert response.status_code == 422 and detail["code"] == "bundle_refused"
        assert "'mfcc'" in detail["message"] and "'muq'" in detail["message"]
        upload = post_embed(client, wav_bytes(tone(440, 1.0)), track_id="enc:refused")
        assert upload.status_code == 503 and upload.json()["detail"]["code"] == "not_ready"
