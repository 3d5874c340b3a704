"""A short reason a listener can read beside each recommended track, from what the ranker already holds."""

from __future__ import annotations

from encore.audio.encoder import parse_tags

SOUND_TAGS = 3  # MusiCNN's MTT head names genres and instruments ("classical", "strings", "drums")


def sound_tags(tags: str | None) -> list[str]:
    """The track's top MTT tags (genres, instruments, moods), most probable first; [] when it has none."""
    return parse_tags(tags).get("mtt", [])


def reason(*, cold: bool, genre: str | None, tags: str | None) -> str:
    """e.g. "new upload that sounds classical, violin, strings", or "jazz, played by listeners like you"."""
    sound = sound_tags(tags)[:SOUND_TAGS]
    if cold:
        return f"new upload that sounds {', '.join(sound)}" if sound else "new upload whose sound suits your plays"
    heard = f"{genre}, played by listeners like you" if genre else "played by listeners like you"
    return f"{heard}; sounds {', '.join(sound)}" if sound else heard
