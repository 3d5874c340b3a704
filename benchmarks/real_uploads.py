"""Real recordings against the demo world: do uploads crowd listeners' top-10, and can each still be found?

Uploads every clip in an audio folder (../shared/data/audio by default) plus three unusual files (a 3 s
clipped full-scale square wave, a 1 s tone and a 0.5 s six-channel file) through a running stack's
`POST /embed`, then asks `/recommend` for users 0..N-1 (`--users`; those the bundle does not know are left out)
and reports, over the known listeners' top-10:
- upload_slot_ratio: the uploads' share of top-10 slots over their share of the catalog (goal <= 3);
- max_user_share: the largest fraction of users whose top-10 holds one upload (goal <= 0.2);
- unreachable: accepted real clips that rank in no known user's top-50 (goal: none);
- sounds_like_share: the share of top-10 items whose reason names a track the listener played (no goal: how
  often the "sounds like <a track you played>" reason is there to read).

    .venv/bin/python benchmarks/real_uploads.py --label after [--start]   # --start: bootstrap + stack of its own
    .venv/bin/python benchmarks/real_uploads.py --ranker http://127.0.0.1:8000 --embedder http://127.0.0.1:8002

Writes `docs/results/real_uploads/<label>.json` (one row per upload with its rank statistics, plus the
summary); `--table` prints the markdown table of every label found there. tests/test_real_uploads.py runs
`run_check` on a quick world.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "data" / "audio"
OUT = ROOT / "docs" / "results" / "real_uploads"
GOALS = {"upload_slot_ratio": 3.0, "max_user_share": 0.2}


def unusual_files() -> dict[str, bytes]:
    """The three edge cases of the check, rendered as WAV bytes."""
    sr = 44100

    def wav(x: np.ndarray, rate: int = sr) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    t = np.arange(3 * sr) / sr
    square = np.clip(4.0 * np.sign(np.sin(2 * np.pi * 220 * t)), -1, 1) * 0.9999  # clipped full scale
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    t6 = np.arange(sr // 2) / sr
    six = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t6) for c in range(6)], axis=1)
    return {"edge-square-3s.wav": wav(square), "edge-tone-1s.wav": wav(tone), "edge-six-channel-0.5s.wav": wav(six)}


@dataclass
class Upload:
    name: str
    track_id: str
    real: bool
    status: int
    code: str | None = None  # the refusal's code when status != 200
    typicality: float | None = None
    users_top10: int = 0  # users whose top-10 holds it
    users_top50: int = 0
    best_rank: int | None = None


@dataclass
class Report:
    label: str
    users: int
    catalog: int
    uploads: list[Upload] = field(default_factory=list)
    upload_slot_share: float = 0.0
    upload_catalog_share: float = 0.0
    upload_slot_ratio: float = 0.0
    max_user_share: float = 0.0
    unreachable: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    sounds_like_share: float = 0.0

    def passes(self) -> bool:
        return (
            self.upload_slot_ratio <= GOALS["upload_slot_ratio"]
            and self.max_user_share <= GOALS["max_user_share"]
            and not self.unreachable
        )


def upload_all(
    client: httpx.Client, embedder: str, api_key: str, audio_dir: Path, bodies: dict[str, dict] | None = None
) -> list[Upload]:
    """Upload every clip plus the unusual files; `bodies` (when given) collects each accepted upload's /embed
    answer by file name (its stored embedding and tags: benchmarks/new_listener_uploads.py reads them)."""
    files = [(p.name, p.read_bytes(), True) for p in sorted(audio_dir.iterdir()) if p.suffix != ".csv"]
    files += [(name, data, False) for name, data in unusual_files().items()]
    uploads = []
    for i, (name, data, real) in enumerate(files):
        track_id = f"upload-{i:02d}"
        resp = client.post(
            f"{embedder}/embed",
            headers={"X-API-Key": api_key},
            files={"file": (name, data)},
            data={"track_id": track_id, "overwrite": "true"},
        )
        body = resp.json()
        up = Upload(name, track_id, real, resp.status_code)
        if resp.status_code == 200:
            up.typicality = body.get("typicality")
            if bodies is not None:
                bodies[name] = body
        else:
            up.code = body.get("detail", {}).get("code") if isinstance(body.get("detail"), dict) else str(body)
        uploads.append(up)
    return uploads


def run_check(
    client: httpx.Client, ranker: str, embedder: str, api_key: str, users: list[str], catalog: int, audio_dir: Path,
    label: str = "check",
) -> Report:  # fmt: skip
    uploads = upload_all(client, embedder, api_key, audio_dir)
    accepted = {u.track_id: u for u in uploads if u.status == 200}
    slots = Counter()
    sounds_like = Counter()
    top10_users: Counter[str] = Counter()
    top50_users: Counter[str] = Counter()
    known = 0
    for user in users:
        resp = client.get(f"{ranker}/recommend", params={"user_id": user, "k": 50})
        resp.raise_for_status()
        if resp.json()["candidate_source"] == "popularity":
            continue  # not a known listener of this bundle
        known += 1
        ids = [item["track_id"] for item in resp.json()["items"]]
        slots.update(tid in accepted for tid in ids[:10])
        sounds_like.update("sounds like " in item["reason"] for item in resp.json()["items"][:10])
        for rank, tid in enumerate(ids, start=1):
            if tid in accepted:
                up = accepted[tid]
                up.best_rank = rank if up.best_rank is None else min(up.best_rank, rank)
                top50_users[tid] += 1
                top10_users[tid] += rank <= 10
    for tid, up in accepted.items():
        up.users_top10, up.users_top50 = top10_users[tid], top50_users[tid]
    report = Report(label, known, catalog, uploads)
    report.upload_slot_share = slots[True] / max(1, slots[True] + slots[False])
    report.upload_catalog_share = len(accepted) / (catalog + len(accepted))
    report.upload_slot_ratio = report.upload_slot_share / report.upload_catalog_share if accepted else 0.0
    report.max_user_share = max((u.users_top10 for u in accepted.values()), default=0) / max(1, known)
    report.unreachable = [u.name for u in accepted.values() if u.real and u.users_top50 == 0]
    report.refused = [f"{u.name} ({u.status} {u.code})" for u in uploads if u.status != 200]
    report.sounds_like_share = sounds_like[True] / max(1, sounds_like.total())
    return report


def save(report: Report, out_dir: Path = OUT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.label}.json"
    path.write_text(json.dumps(asdict(report) | {"passes": report.passes()}, indent=1) + "\n")
    return path


def table(out_dir: Path = OUT) -> str:
    """Markdown: one row per saved label."""
    rows = ["| run | uploads accepted | slot share | catalog share | ratio (goal <= 3) | max user share (goal <= 0.2) "
            "| unreachable real clips | fewest listeners of a real clip (top-50) | refused "
            "| top-10 reasons naming a played track |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in sorted(out_dir.glob("*.json"), key=lambda p: (int(p.name.split("-")[0]), p.name)):
        r = json.loads(path.read_text())
        accepted = sum(u["status"] == 200 for u in r["uploads"])
        fewest = min(u["users_top50"] for u in r["uploads"] if u["real"] and u["status"] == 200)
        rows.append(
            f"| {r['label']} | {accepted} | {r['upload_slot_share']:.3f} | {r['upload_catalog_share']:.3f} "
            f"| {r['upload_slot_ratio']:.2f} | {r['max_user_share']:.3f} | {len(r['unreachable'])} | {fewest} "
            f"| {', '.join(r['refused']) or '-'} "
            f"| {_share(r.get('sounds_like_share'))} |"
        )
    return "\n".join(rows)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"  # runs saved before the column existed show "-"


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every listener check takes (this one, benchmarks/new_listener_uploads.py): the run's label, the
    running stack, its key, the clips to upload, and --table."""
    parser.add_argument("--label", default="check")
    parser.add_argument("--ranker", default="http://127.0.0.1:8000")
    parser.add_argument("--embedder", default="http://127.0.0.1:8002")
    parser.add_argument("--api-key", default="encore-dev-key")
    parser.add_argument("--audio-dir", type=Path, default=AUDIO)
    parser.add_argument("--table", action="store_true", help="print the table of saved runs and exit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_check_arguments(parser)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--catalog", type=int, required=False, help="catalog size (default: the ranker's /readyz)")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    if not args.audio_dir.is_dir():
        print(f"error: no audio folder at {args.audio_dir}", file=sys.stderr)
        return 2
    with httpx.Client(timeout=120) as client:
        catalog = args.catalog or int(client.get(f"{args.ranker}/readyz").json()["tracks_in_table"])
        users = [str(u) for u in range(args.users)]  # the synthetic world's user ids
        report = run_check(client, args.ranker, args.embedder, args.api_key, users, catalog, args.audio_dir, args.label)
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "uploads"}, indent=1))
    print(f"wrote {save(report)}; passes: {report.passes()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
