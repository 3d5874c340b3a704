"""Real recordings for a listener the bundle does not know: do the uploads they are shown sound like their plays?

Uploads every clip (benchmarks/real_uploads.py's `upload_all`: the 12 real clips plus the unusual files) through
a running stack's `POST /embed`, then, for each listener group in GROUPS, a new listener id posts plays
(`POST /events`, type play, 120 s) of that group's clips and reads `/recommend?k=10` (a fold-in: candidate_source
"foldin"). Per listener it records:
- uploads: how many of the top-10 are uploads, and which, in order;
- closeness: an upload's mean cosine, between stored content vectors (what /embed returns: MusiCNN's penultimate,
  standardized and bounded), to the clips the listener played;
- shown_closeness: the mean closeness of the uploads shown; best_closeness: the same for the as many unplayed
  uploads closest to the plays (the most any list with that many uploads could reach); all_closeness: the mean
  over every unplayed upload (what a list blind to sound gets on average);
- first_is_closest: whether the first upload shown is the unplayed upload closest to the plays; closest_rank:
  where that upload is in the top-10.

    .venv/bin/python -m benchmarks.new_listener_uploads --label NAME   # writes docs/results/real_uploads/new_listeners/
    .venv/bin/python -m benchmarks.new_listener_uploads --table        # the table in docs/real_audio.md
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from benchmarks.real_uploads import OUT, add_check_arguments, upload_all

NEW_OUT = OUT / "new_listeners"
# Listener groups by the clips' MusiCNN tags (the mtt head's top 5, which /embed returns and the JSON keeps):
# brahms and nutcracker are "classical, strings, violin", with pistachio_ragtime "piano, classical, solo";
# vibeace and hiphop "electronic, techno, beat"; fishin and gtzan_country "female, vocal, guitar, pop";
# samba and choice_drumbass "drums, beat, guitar".
GROUPS = {
    "classical": ["librosa_brahms_hungarian5.ogg", "librosa_nutcracker.ogg"],
    "classical-3": ["librosa_brahms_hungarian5.ogg", "librosa_nutcracker.ogg", "librosa_pistachio_ragtime.ogg"],
    "electronic": ["librosa_vibeace.ogg", "essentia_hiphop.mp3"],
    "vocal": ["librosa_fishin.ogg", "gtzan_country.00000.wav"],
    "drums": ["brid_M4-01-SA_samba.wav", "librosa_choice_drumbass.ogg"],
}


@dataclass
class Listener:
    group: str
    user_id: str
    played: list[str]
    source: str = ""
    top10: list[str] = field(default_factory=list)  # track ids, uploads by file name
    uploads: list[str] = field(default_factory=list)  # the uploads shown, in order (file names)
    closeness: dict[str, float] = field(default_factory=dict)  # every unplayed upload -> mean cosine to the plays
    shown_closeness: float | None = None
    best_closeness: float | None = None
    all_closeness: float = 0.0
    closest: str = ""
    closest_rank: int | None = None  # where the closest unplayed upload is in the top-10 (None: not there)
    first_is_closest: bool = False


@dataclass
class NewListenerReport:
    label: str
    listeners: list[Listener] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)  # each upload's MusiCNN mtt tags


def unit(vectors: dict[str, list[float]]) -> dict[str, np.ndarray]:
    out = {}
    for name, v in vectors.items():
        a = np.asarray(v, dtype=np.float64)
        out[name] = a / max(float(np.linalg.norm(a)), 1e-12)
    return out


def closeness_to(played: list[str], units: dict[str, np.ndarray]) -> dict[str, float]:
    """Every unplayed upload's mean cosine to the played clips, closest first."""
    scores = {n: float(np.mean([units[n] @ units[p] for p in played])) for n in units if n not in played}
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def plays(user: str, tracks: list[str]) -> list[dict]:
    ts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    return [{"id": uuid.uuid4().hex, "user_id": user, "track_id": t, "type": "play", "ms": 120_000, "ts": ts}
            for t in tracks]  # fmt: skip


def check_listener(
    client: httpx.Client, ranker: str, embedder: str, api_key: str, group: str, ids: dict[str, str],
    units: dict[str, np.ndarray], k: int = 10,
) -> Listener:  # fmt: skip
    played = GROUPS[group]
    listener = Listener(group, f"new-{group}-{uuid.uuid4().hex[:8]}", played)
    events = plays(listener.user_id, [ids[p] for p in played])
    resp = client.post(f"{embedder}/events", json={"events": events}, headers={"X-API-Key": api_key})
    resp.raise_for_status()
    resp = client.get(f"{ranker}/recommend", params={"user_id": listener.user_id, "k": k})
    resp.raise_for_status()
    body, names = resp.json(), {v: n for n, v in ids.items()}
    listener.source = body["candidate_source"]
    listener.top10 = [names.get(item["track_id"], item["track_id"]) for item in body["items"]]
    listener.uploads = [names[item["track_id"]] for item in body["items"] if item["track_id"] in names]
    listener.closeness = closeness_to(played, units)
    ranked = list(listener.closeness)
    listener.closest = ranked[0]
    listener.closest_rank = listener.top10.index(ranked[0]) + 1 if ranked[0] in listener.top10 else None
    listener.all_closeness = float(np.mean(list(listener.closeness.values())))
    if listener.uploads:
        listener.shown_closeness = float(np.mean([listener.closeness[n] for n in listener.uploads]))
        listener.best_closeness = float(np.mean([listener.closeness[n] for n in ranked[: len(listener.uploads)]]))
        listener.first_is_closest = listener.uploads[0] == listener.closest
    return listener


def run_new_listeners(
    client: httpx.Client, ranker: str, embedder: str, api_key: str, audio_dir: Path, label: str = "check"
) -> NewListenerReport:
    bodies: dict[str, dict] = {}
    uploads = upload_all(client, embedder, api_key, audio_dir, bodies)
    ids = {u.name: u.track_id for u in uploads if u.status == 200}
    units = unit({name: body["embedding"] for name, body in bodies.items()})
    report = NewListenerReport(label, tags={name: body.get("tags", {}).get("mtt", []) for name, body in bodies.items()})
    for group in GROUPS:
        if all(p in ids for p in GROUPS[group]):
            report.listeners.append(check_listener(client, ranker, embedder, api_key, group, ids, units))
    return report


def save(report: NewListenerReport, out_dir: Path = NEW_OUT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.label}.json"
    path.write_text(json.dumps(asdict(report), indent=1) + "\n")
    return path


def _short(name: str) -> str:
    return Path(name).stem.removeprefix("librosa_").removeprefix("essentia_")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(out_dir: Path = NEW_OUT) -> list[str]:
    """Markdown rows: one per saved label and listener."""
    rows = ["| run | listener played | source | uploads in top-10 | first upload shown | closest unplayed upload "
            "| its rank | first is closest | closeness of uploads shown | best possible | every unplayed upload |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in sorted(out_dir.glob("*.json")):
        r = json.loads(path.read_text())
        for x in r["listeners"]:
            first = _short(x["uploads"][0]) if x["uploads"] else "-"
            rows.append(
                f"| {r['label']} | {' + '.join(_short(p) for p in x['played'])} | {x['source']} | {len(x['uploads'])} "
                f"| {first} | {_short(x['closest'])} | {x['closest_rank'] or '-'} "
                f"| {'yes' if x['first_is_closest'] else 'no'} "
                f"| {_num(x['shown_closeness'])} | {_num(x['best_closeness'])} | {_num(x['all_closeness'])} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_check_arguments(parser)
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(table()))
        return 0
    if not args.audio_dir.is_dir():
        print(f"error: no audio folder at {args.audio_dir}", file=sys.stderr)
        return 2
    with httpx.Client(timeout=120) as client:
        report = run_new_listeners(client, args.ranker, args.embedder, args.api_key, args.audio_dir, args.label)
    for x in report.listeners:
        print(f"{x.group}: {x.source} uploads {len(x.uploads)} {x.uploads} closest {x.closest}")
    print(f"wrote {save(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
