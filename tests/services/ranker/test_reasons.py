"""The reason beside each recommended track reads the stored tags (encore.audio.encoder.format_tags)."""

from encore.audio.encoder import format_tags
from services.ranker.reasons import reason

TAGS = format_tags({"mtt": ["classical", "violin", "strings", "slow", "cello"], "msd": ["jazz", "oldies"]})


def test_an_upload_is_described_by_its_sound_and_a_catalog_track_by_genre_and_sound() -> None:
    assert reason(cold=True, genre=None, tags=TAGS) == "new upload that sounds classical, violin, strings"
    assert (
        reason(cold=False, genre="jazz", tags=TAGS)
        == "jazz, played by listeners like you; sounds classical, violin, strings"
    )
    assert reason(cold=False, genre=None, tags="") == "played by listeners like you"
    assert reason(cold=True, genre="folk", tags=None) == "new upload whose sound suits your plays"
