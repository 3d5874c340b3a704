"""The kept-audio folder: content-addressed, capped, least recently used first out; signed links."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.embedder.audio_store import AudioStore, sign, signature_ok


def test_one_file_is_kept_once_for_two_ids_and_leaves_with_the_last(tmp_path: Path) -> None:
    store = AudioStore(tmp_path, max_bytes=10_000)
    assert store.keep("a", b"RIFF" + b"x" * 100, "a.wav") and store.keep("b", b"RIFF" + b"x" * 100, "b.wav")
    assert store.used_bytes() == 104
    assert store.find("a").path == store.find("b").path and store.find("a").media_type == "audio/wav"
    assert store.forget("a") and store.find("b") is not None  # b still points at the blob
    assert store.forget("b") and store.used_bytes() == 0 and store.find("b") is None
    assert not store.forget("b")


def test_past_the_cap_the_least_recently_played_go_first(tmp_path: Path) -> None:
    store = AudioStore(tmp_path, max_bytes=300)
    for i, name in enumerate("abc"):
        store.keep(name, bytes([i]) * 100, None)
        blob = store.find(name).path
        os.utime(blob, (time.time() - 100 + i, time.time() - 100 + i))  # a oldest, c newest
    store.find("a")  # played now: the most recently used
    assert store.keep("d", b"d" * 100, None)
    assert store.find("b") is None  # the least recently used went
    assert all(store.find(n) is not None for n in "acd")
    assert store.used_bytes() <= 300
    assert not store.keep("huge", b"h" * 301, None) and store.find("huge") is None  # larger than the cap


def test_a_signed_link_opens_one_track_until_it_expires() -> None:
    later = int(time.time()) + 60
    sig = sign("key", "t1", later)
    assert signature_ok("key", "t1", later, sig)
    assert not signature_ok("key", "t2", later, sig)  # another track
    assert not signature_ok("other", "t1", later, sig)  # another key
    assert not signature_ok("key", "t1", later + 1, sig)  # a longer expiry
    past = int(time.time()) - 1
    assert not signature_ok("key", "t1", past, sign("key", "t1", past))  # expired
    assert not signature_ok("", "t1", later, sign("", "t1", later))  # no key configured: no links
