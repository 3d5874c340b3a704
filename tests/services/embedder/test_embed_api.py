"""POST /embed, GET /tracks, /admin/reload, /readyz and /metrics over HTTP, against a real bundle and store."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from encore import feature_names as fn
from encore.store import Store
from services.common.patterns import TRACK_ID_PATTERN
from tests.services.embedder.helpers import (
    API_KEY,
    AUTH,
    GOOD_BUNDLE,
    OTHER_REVISION_BUNDLE,
    RATE,
    K,
    Recorder,
    offline_parts,
    post_embed,
    tone,
    wav_bytes,
)
from tests.services.error_shape import walk_routes


def test_real_clip_is_stored_retrievable_and_announced(
    client: TestClient, store: Store, retriever: Recorder, shared_audio: Path
) -> None:
    meta = {"artist_id": "a42", "genre": "hip-hop", "key": 9, "mode": 0, "language": "en", "release_year": 2019}
    response = post_embed(client, (shared_audio / "essentia_hiphop.mp3").read_bytes(), track_id="real:hiphop", **meta)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["track_id"] == "real:hiphop" and body["bundle_id"] == GOOD_BUNDLE
    assert (body["encoder"], body["n_layers"], body["dim"], body["n_tokens"]) == ("mfcc", 1, 264, 1)
    assert re.fullmatch(r"1\+cb\.[0-9a-f]{12}", body["encoder_revision"])
    assert len(body["embedding"]) == 264 and np.isfinite(body["embedding"]).all()
    assert all(0 <= t < K for t in body["tokens"])
    assert body["seconds_used"] == pytest.approx(5.28, abs=0.05) and body["truncated"] is False and body["note"] is None
    assert body["retriever_notified"] is True and body["overwritten"] is False
    assert body["processing_ms"] > 0 and set(body["timings_ms"]) == {"read", "decode", "encode", "store", "notify"}

    stored = client.get("/tracks/real:hiphop").json()
    np.testing.assert_allclose(stored["embedding"], body["embedding"], rtol=1e-6)
    assert stored["tokens"] == body["tokens"] and stored["encoder_revision"] == body["encoder_revision"]
    assert stored["meta"] == {**meta, "popularity": 0.0}

    offline = store.read_offline(fn.TRACK_CONTENT).set_index(fn.TRACK_ID)
    np.testing.assert_allclose(offline.loc["real:hiphop", "embedding"], body["embedding"], rtol=1e-6)
    assert store.read_offline(fn.TRACK_META).set_index(fn.TRACK_ID).loc["real:hiphop", "genre"] == "hip-hop"

    [(path, headers, payload)] = [c for c in retriever.calls if c[2]["track_id"] == "real:hiphop"]
    assert path == "/items" and headers.get("X-API-Key") == API_KEY
    assert payload == {k: body[k] for k in ("track_id", "embedding", "encoder", "encoder_revision")}


def test_track_id_is_generated_and_defaults_fill_meta(client: TestClient, store: Store) -> None:
    response = post_embed(client, wav_bytes(tone(330, 2.0)))
    assert response.status_code == 200, response.text
    track_id = response.json()["track_id"]
    assert re.match(TRACK_ID_PATTERN, track_id) and store.track_exists(track_id)
    meta = client.get(f"/tracks/{track_id}").json()["meta"]
    assert meta == {"artist_id": "", "genre": "", "key": -1, "mode": -1, "language": "", "release_year": -1,
                    "popularity": 0.0}  # fmt: skip


def _flac_cut_short() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(440, 3.0), RATE, format="FLAC")
    return buf.getvalue()[: len(buf.getvalue()) * 6 // 10]


def _nan_wav() -> bytes:
    samples = tone(440, 1.0)
    samples[100:200] = np.nan
    return wav_bytes(samples, subtype="FLOAT")


def _wav_with_unknown_codec() -> bytes:
    wav = bytearray(wav_bytes(tone(440, 0.5)))
    struct.pack_into("<H", wav, 20, 0x1234)  # a WAVE format tag no decoder knows
    return bytes(wav)


RANDOM_BYTES = np.random.default_rng(7).integers(0, 255, 4096, dtype=np.uint8).tobytes()
BAD_UPLOADS = {
    "no file": (None, {}, AUTH, 400, "no_file"),
    "empty file": (b"", {}, AUTH, 400, "empty_file"),
    "random bytes": (RANDOM_BYTES, {}, AUTH, 415, "not_audio"),
    "truncated flac": (_flac_cut_short(), {}, AUTH, 400, "corrupt"),
    "text renamed .wav": (b"just some notes, not a song\n" * 20, {}, AUTH, 415, "not_audio"),
    "unknown codec in wav": (_wav_with_unknown_codec(), {}, AUTH, 415, "unsupported_codec"),
    "zero-length wav": (wav_bytes(np.zeros(0, np.float32)), {}, AUTH, 422, "zero_length"),
    "silent wav": (wav_bytes(np.zeros(RATE, np.float32)), {}, AUTH, 422, "silent"),
    "nan float wav": (_nan_wav(), {}, AUTH, 422, "non_finite"),
    "9-channel wav": (wav_bytes(np.tile(tone(440, 0.5)[:, None], (1, 9))), {}, AUTH, 422, "too_many_channels"),
    "bad track_id": (wav_bytes(tone(440, 1.0)), {"track_id": "../../etc/passwd"}, AUTH, 422, "invalid_request"),
    "key out of range": (wav_bytes(tone(440, 1.0)), {"key": 12}, AUTH, 422, "invalid_request"),
    "missing api key": (wav_bytes(tone(440, 1.0)), {}, {}, 401, "unauthorized"),
    "wrong api key": (wav_bytes(tone(440, 1.0)), {}, {"X-API-Key": "nope"}, 401, "unauthorized"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_and_nothing_is_written(client: TestClient, store: Store, case: str) -> None:
    data, form, headers, status, code = BAD_UPLOADS[case]
    track_id = form.get("track_id", f"bad-{re.sub(r'[^a-z0-9]', '-', case)}")
    before = offline_parts(store)

    response = post_embed(client, data, headers, **{"track_id": track_id, **form})

    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and len(detail["message"]) > 10
    assert offline_parts(store) == before
    if re.match(TRACK_ID_PATTERN, track_id):
        assert not store.track_exists(track_id)


def test_existing_track_id_needs_overwrite(client: TestClient, store: Store) -> None:
    first = post_embed(client, wav_bytes(tone(220, 2.0)), track_id="dup:1").json()
    before = offline_parts(store)

    refused = post_embed(client, wav_bytes(tone(880, 2.0, bpm=150)), track_id="dup:1")
    assert refused.status_code == 409 and refused.json()["detail"]["code"] == "track_exists"
    assert "overwrite=true" in refused.json()["detail"]["message"]
    assert offline_parts(store) == before
    assert client.get("/tracks/dup:1").json()["embedding"] == pytest.approx(first["embedding"])

    replaced = post_embed(client, wav_bytes(tone(880, 2.0, bpm=150)), track_id="dup:1", overwrite="true")
    assert replaced.status_code == 200 and replaced.json()["overwritten"] is True
    assert client.get("/tracks/dup:1").json()["embedding"] == pytest.approx(replaced.json()["embedding"])
    assert replaced.json()["embedding"] != pytest.approx(first["embedding"])


def test_unknown_or_malformed_track_lookup(client: TestClient) -> None:
    missing = client.get("/tracks/never-uploaded")
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "not_found"
    assert "never-uploaded" in missing.json()["detail"]["message"]
    assert client.get("/tracks/bad%20id").status_code == 422


def test_codebooks_of_another_encoder_revision_are_refused_and_old_bundle_keeps_serving(client: TestClient) -> None:
    refused = client.post("/admin/reload", json={"bundle_id": OTHER_REVISION_BUNDLE}, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["detail"]["code"] == "bundle_refused"
    assert "revision" in refused.json()["detail"]["message"]
    assert client.get("/readyz").json()["bundle_id"] == GOOD_BUNDLE
    assert post_embed(client, wav_bytes(tone(550, 1.5))).json()["bundle_id"] == GOOD_BUNDLE

    assert client.post("/admin/reload", json={"bundle_id": "../x"}, headers=AUTH).status_code == 422
    assert client.post("/admin/reload").status_code == 401
    current = client.post("/admin/reload", headers=AUTH)  # no body: artifacts/CURRENT
    assert current.status_code == 200 and current.json()["bundle_id"] == GOOD_BUNDLE


def test_readyz_metrics_and_openapi(client: TestClient) -> None:
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["store"] is True and ready["codebooks"] == {"n_fields": 1, "k": K}
    post_embed(client, b"")  # one refused upload, counted by outcome
    metrics = client.get("/metrics").text
    assert re.search(r'encore_http_requests_total\{.*route="/embed".*status="400"\} [1-9]', metrics)
    assert re.search(r'encore_embedder_uploads_total\{outcome="empty_file"\} [1-9]', metrics)

    spec = client.get("/openapi.json").json()
    embed = spec["paths"]["/embed"]["post"]
    assert "multipart/form-data" in embed["requestBody"]["content"]
    assert {"200", "400", "401", "409", "413", "415", "422"} <= set(embed["responses"])
    assert spec["components"]["schemas"]["EmbedResponse"]["examples"]


def test_every_route_refuses_bad_requests_in_the_one_error_shape(client: TestClient) -> None:
    seen = walk_routes(client, AUTH, oversized={"/embed": client.app.state.settings.max_body_bytes + 1})
    assert ("POST /embed", 401) in seen and ("POST /embed", 413) in seen and ("POST /admin/reload", 401) in seen
    assert ("GET /tracks/{track_id}", 422) in seen and ("GET /readyz", 405) in seen


def test_an_unknown_form_field_is_named_without_echoing_it(client: TestClient) -> None:
    response = post_embed(client, wav_bytes(tone(440, 1.0)), **{"x" * 200: "1"})
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_request"
    assert "x" * 33 not in response.text and "x" * 32 in response.text
