"""A corpus of bad uploads (issue 8): every kind gets a 4xx with a clear coded message and nothing is written.

test_embed_api.py covers the first dozen kinds (empty, random bytes, cut FLAC, text, unknown codec, NaN, ...);
these are the rest: lying headers, absurd formats, bombs, other file types, hostile names. The API key is
checked before the body is read (the middleware answers without calling `receive`).
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zipfile

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from encore.settings import EmbedderSettings
from encore.store import Store
from services.embedder.main import create_app
from tests.services.embedder.helpers import AUTH, RATE, offline_parts, tone, wav_bytes


def _encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64)) * 8


def _zip_of_wav() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("song.wav", wav_bytes(tone(440, 1.0)))
    return buf.getvalue()


def _video_without_audio() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


WAV = wav_bytes(tone(440, 1.0))
# WAV header offsets (soundfile's PCM_16 layout): 22 channels, 24 sample rate, 40 data-chunk size.
CORPUS: dict[str, tuple[bytes, str, int, str]] = {
    # name: (bytes, filename, status, code)
    "zero bytes named .mp3": (b"", "song.mp3", 400, "empty_file"),
    "wav header only, no data chunk": (WAV[:36], "song.wav", 400, "corrupt"),
    "wav cut in the middle": (WAV[: len(WAV) // 3], "song.wav", 400, "corrupt"),
    "header claims 2^31 bytes of wav data": (_patched(WAV, 40, "<I", 2**31), "song.wav", 400, "corrupt"),
    "header claims 65535 channels": (_patched(WAV, 22, "<H", 65535), "song.wav", 400, "corrupt"),
    "header claims a 1 Hz sample rate": (_patched(WAV, 24, "<I", 1), "song.wav", 422, "bad_sample_rate"),
    "1 Hz sample rate (real file)": (_encoded(np.full((50, 1), 0.3, np.float32), 1, "WAV", "PCM_16"), "a.wav", 422,
                                     "bad_sample_rate"),
    "header claims 4 GHz sample rate": (_patched(WAV, 24, "<I", 4_000_000_000), "song.wav", 400, "corrupt"),
    "8-channel (7.1) wav": (wav_bytes(np.tile(tone(440, 0.3)[:, None], (1, 8))), "surround.wav", 422,
                            "too_many_channels"),
    "decompression bomb: 25 min of flac at 8 kHz": (
        _encoded(np.full((25 * 60 * 8000, 1), 0.25, np.float32), 8000, "FLAC", "PCM_16"), "bomb.flac", 400, "corrupt"),
    "very long silence (60 s wav)": (wav_bytes(np.zeros(60 * 8000, np.float32), rate=8000), "quiet.wav", 422, "silent"),
    "-130 dBFS hiss": (wav_bytes(np.full(RATE, 3e-7, np.float32), subtype="FLOAT"), "hiss.wav", 422, "silent"),
    "infinite samples": (wav_bytes(np.where(np.arange(RATE) == 5, np.inf, tone(440, 1.0)).astype(np.float32),
                                   subtype="FLOAT"), "inf.wav", 422, "non_finite"),
    "PNG image named .wav": (_png(), "cover.wav", 415, "not_audio"),
    "zip archive holding a wav": (_zip_of_wav(), "songs.flac", 415, "not_audio"),
    "PDF named .mp3": (b"%PDF-1.7\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 40, "a.mp3", 415, "not_audio"),
    "ELF executable": (b"\x7fELF\x02\x01\x01" + bytes(500), "run.ogg", 415, "not_audio"),
    "HTML page": (b"<!doctype html><html><body>" + b"<p>hi</p>" * 100 + b"</body></html>", "x.m4a", 415, "not_audio"),
    "video without an audio stream": (_video_without_audio(), "clip.mp4", 415, "not_audio"),
    "ogg cut after its first page": (_encoded(tone(440, 2.0), RATE, "OGG", "VORBIS")[:200], "a.ogg", 400, "corrupt"),
    "mp3 sync bytes then garbage": (b"\xff\xfb\x90\x64" + bytes(range(256)) * 20, "a.mp3", 400, "corrupt"),
}  # fmt: skip


def test_the_corpus_has_at_least_twenty_kinds() -> None:
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_upload_gets_a_clear_4xx_and_nothing_is_written(client: TestClient, store: Store, case: str) -> None:
    data, filename, status, code = CORPUS[case]
    track_id = "corpus-" + re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
    before = offline_parts(store)
    response = client.post("/embed", files={"file": (filename, data)}, data={"track_id": track_id}, headers=AUTH)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and len(detail["message"]) > 15, detail
    assert offline_parts(store) == before and not store.track_exists(track_id)


@pytest.mark.parametrize(
    ("filename", "track_id"),
    [("../../etc/passwd", "hostile-name-1"), ("/tmp/x.wav\x00.png", "hostile-name-2"), ("C:\\Windows\\a.wav", "h-3")],
)
def test_hostile_filenames_never_become_paths(client: TestClient, store: Store, filename: str, track_id: str) -> None:
    """The upload's filename is ignored: the bytes are decoded in memory and stored under the track id only."""
    response = client.post(
        "/embed", files={"file": (filename, wav_bytes(tone(330, 1.0)))}, data={"track_id": track_id}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    parts = offline_parts(store)
    assert all(store.settings.offline_dir in p.parents and "passwd" not in str(p) for p in parts)


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"x-api-key": "wrong"}, 401)])
def test_api_key_is_checked_before_the_body_is_read(artifacts_dir, headers: dict, status: int) -> None:
    app = create_app(EmbedderSettings(artifacts_dir=artifacts_dir, api_key="right", retriever_url="", encoder="mfcc"))
    reads: list[dict] = []
    sent: list[dict] = []

    async def receive() -> dict:
        reads.append({})
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/embed", "raw_path": b"/embed", "query_string": b"", "root_path": "", "server": ("t", 80),
        "client": ("c", 1), "app": app,
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"10000000"),
                    *((k.encode(), v.encode()) for k, v in headers.items())],
    }  # fmt: skip
    asyncio.run(_call(app, scope, receive, send))
    assert sent[0]["status"] == status and not reads  # refused from the headers alone
    assert b'"code":"unauthorized"' in sent[1]["body"]


async def _call(app, scope, receive, send) -> None:
    """The app's middleware stack, without its lifespan: the key check must not need anything loaded."""
    await app.build_middleware_stack()(scope, receive, send)
