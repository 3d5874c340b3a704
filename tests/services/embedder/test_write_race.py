"""Two embedder apps (as two worker processes would be) uploading the same new track id at once: exactly one
wins, the other gets 409; the store's cross-process lock closes the check-then-write gap between them."""

from __future__ import annotations

import threading

from tests.services.embedder.helpers import offline_parts, post_embed, tone, wav_bytes


def test_same_new_track_id_from_two_workers_is_written_once(make_client, store) -> None:
    track_id = "race:1"
    before = len(offline_parts(store))
    data = [wav_bytes(tone(330, 2.0)), wav_bytes(tone(550, 2.0))]
    start = threading.Barrier(2)
    statuses: list[int] = []
    with make_client() as first, make_client() as second:

        def upload(client, payload: bytes) -> None:
            start.wait()
            statuses.append(post_embed(client, payload, track_id=track_id).status_code)

        threads = [threading.Thread(target=upload, args=pair) for pair in ((first, data[0]), (second, data[1]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sorted(statuses) == [200, 409], statuses
    assert store.track_exists(track_id)
    assert len(offline_parts(store)) == before + 2  # one content part and one meta part, written once
