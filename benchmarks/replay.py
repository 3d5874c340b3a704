"""Replay benchmark (issue 21): a further day of listening through POST /events, fold-in, retrain, the next day.

    .venv/bin/python -m benchmarks.replay --label quick                 # bootstraps a quick world, then replays
    .venv/bin/python -m benchmarks.replay --label quick --world /tmp/w  # reuse a bootstrapped world's folder

Against the running stack (services/stack.py) on a bootstrapped synthetic world, whose true preferences are known:
1. upload --uploads tracks through POST /embed: copies of world tracks' rendered audio under new ids, so each has
   the truth of the track it copies; then a day of listening of --known world listeners and --new listeners the
   bundle does not know (each modelled on a world listener's latent taste), through POST /events in batches of 500.
   A listener hears tracks drawn by the world's exposure and plays one when a draw of its true P(liked once heard)
   says so, else skips it; the uploads are heard by a share of the known listeners besides.
2. New listeners' Recall@20 from /recommend after 0, 1, 3, 5 and 10 plays (fold-in), against popularity (the answer
   an unknown listener gets at 0 plays, less what they have heard since).
3. `python -m training.retrain` (its verdict recorded; a refused candidate is then promoted anyway to measure it),
   the services reloaded through POST /admin/reload (services.common.bundle_watch), then the next day: Recall@20 of
   every replayed listener from /recommend before and after, the ranker's AUC / GAUC of both bundles on next-day
   listens drawn from the truth (point-in-time features, the retrain's scoring path), and the uploads' recall.

Relevance ("held-out true preferences"): a listener's true top 20 of the tracks they have not heard, by expected
next-day plays = P(heard) x P(liked once heard), both from the world's truth (World.truth).
Results: docs/results/replay/<label>.json and .csv, docs/replay_recall.png, the table in docs/events.md between its
`replay-table` markers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.events_ingest import KEY, bootstrap, world_env
from encore.settings import EncoreSettings

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs/results/replay"
PLOT = ROOT / "docs/replay_recall.png"
DOC = ROOT / "docs/events.md"
TABLE_START, TABLE_END = "<!-- replay-table start -->", "<!-- replay-table end -->"
COMPARE_START, COMPARE_END = "<!-- replay-compare start -->", "<!-- replay-compare end -->"
BATCH = 500
K = 20
PLAY_STEPS = (0, 1, 3, 5, 10)
PLAYED_MS, SKIPPED_MS = 120_000, 4_000  # a play past 30 s is a positive, a skip before 30 s a negative (docs/events.md)


# --- the truth and the events drawn from it (pure) ----------------------------------------------------------


@dataclass
class Truth:
    """Per-listener true preferences over the catalogue (world tracks, then uploads copying world tracks)."""

    liked: np.ndarray  # (listeners, items) P(liked once heard): World.truth's P(repeat >= 2 | played)
    exposure: np.ndarray  # (listeners, items) P(heard), each row summing to 1
    item_ids: list[str]

    @property
    def expected_plays(self) -> np.ndarray:
        return self.exposure * self.liked


def world_truth(world, listeners: np.ndarray, sources: np.ndarray, item_ids: list[str]) -> Truth:
    """The Truth of world listeners `listeners` over items whose world tracks are `sources`."""
    users, tracks = np.repeat(listeners, len(sources)), np.tile(sources, len(listeners))
    liked, in_plays = (a.reshape(len(listeners), len(sources)) for a in world.truth(users, tracks, 2))
    return Truth(liked, in_plays / in_plays.sum(axis=1, keepdims=True), item_ids)


def recall_at_k(recommended: list[str], relevant: set[str], k: int = K) -> float:
    """Share of the relevant tracks among the first k recommended (relevant sets here hold k tracks)."""
    if not relevant:
        return float("nan")
    return len(set(recommended[:k]) & relevant) / min(k, len(relevant))


def true_top(preference: np.ndarray, item_ids: list[str], heard: set[str], k: int = K) -> set[str]:
    """The k items of highest true preference that were not heard."""
    order = np.argsort(-preference, kind="stable")
    return set([item_ids[i] for i in order if item_ids[i] not in heard][:k])


def listening(rng: np.random.Generator, truth: Truth, row: int, n: int, heard: set[str] = frozenset()) -> list:
    """n listens of listener `row`: (item id, played?) for items drawn without replacement by exposure among those
    not heard yet, played with the item's true P(liked once heard)."""
    allowed = np.array([item not in heard for item in truth.item_ids])
    p = truth.exposure[row] * allowed
    picks = rng.choice(len(p), size=min(n, int(allowed.sum())), replace=False, p=p / p.sum())
    return [(truth.item_ids[i], bool(rng.random() < truth.liked[row, i])) for i in picks]


def until_plays(stream: list, plays: int) -> int:
    """How many listens of `stream` it takes to reach `plays` plays (all of it when it has fewer)."""
    seen = 0
    for i, (_, played) in enumerate(stream):
        if seen == plays:
            return i
        seen += played
    return len(stream)


def as_events(user_id: str, listens: list, stamps: np.ndarray, prefix: str) -> list[dict]:
    """POST /events bodies of `listens` at `stamps` (epoch seconds): a play heard 120 s, or a skip after 4 s."""
    return [
        {"id": f"{prefix}-{user_id}-{i}", "user_id": user_id, "track_id": track, "type": "play" if played else "skip",
         "ms": PLAYED_MS if played else SKIPPED_MS, "ts": float(ts)}
        for i, ((track, played), ts) in enumerate(zip(listens, stamps, strict=True))
    ]  # fmt: skip


def next_day_rows(rows: list[int], users: list[str], listens: list[list], when: pd.Timestamp):
    """The next day's listens as labelled (user, track, time) rows: what the bundles' AUC is measured on."""
    records = [(users[r], track, int(played)) for r, day in zip(rows, listens, strict=True) for track, played in day]
    frame = pd.DataFrame(records, columns=["user_id", "track_id", "label"])
    # one millisecond apart: Feast joins rows with a unique (listener, time) in one pass (training.retrain)
    return frame.assign(event_timestamp=when - pd.to_timedelta(np.arange(len(frame)), unit="ms"))


def summarize(values: list[float]) -> dict:
    """Mean and a normal 95% half-width over listeners (nan recalls, no relevant tracks, left out)."""
    arr = np.asarray([v for v in values if not np.isnan(v)], dtype=np.float64)
    half = 1.96 * arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else float("nan")
    return {"mean": round(float(arr.mean()), 4), "ci95": round(float(half), 4), "n": int(len(arr))}


# --- the running stack ----------------------------------------------------------------------------------------


@dataclass
class Replay:
    """Everything the run draws once: listeners, uploads, their truth, their day and the next."""

    world: object
    truth: Truth
    users: list[str]  # one per truth row: the known listeners first, then the new ones
    n_known: int
    uploads: dict[str, int]  # upload id -> the world track it copies
    history: list[set[str]]  # per truth row: the world plays the bundle trained on (the retriever leaves them out)
    day: list[list] = field(default_factory=list)  # per truth row: (item, played) listens of the replayed day
    stamps: list[np.ndarray] = field(default_factory=list)


def draw_replay(world, args: argparse.Namespace, rng: np.random.Generator) -> Replay:
    n_tracks = len(world.tracks)
    people = rng.choice(len(world.users), args.known + args.new, replace=False)
    copied = rng.choice(n_tracks, args.uploads, replace=False)
    uploads = {f"replay-upload-{i}": int(src) for i, src in enumerate(copied)}
    item_ids = [*world.tracks["track_id"].astype(str), *uploads]
    truth = world_truth(world, people, np.concatenate([np.arange(n_tracks), copied]), item_ids)
    users = [str(u) for u in people[: args.known]] + [f"replay-new-{u}" for u in people[args.known :]]
    plays = world.plays.groupby(world.plays["user_id"].astype(str))["track_id"].agg(lambda s: set(s.astype(str)))
    history = [plays.get(user, set()) for user in users]  # new listeners' ids are not the world's: empty
    return Replay(world, truth, users, args.known, uploads, history)


def heard_by(replay: Replay, row: int, listens: int | None = None) -> set[str]:
    """What listener `row` has heard: their world plays and the first `listens` of their replayed day (all)."""
    return replay.history[row] | {track for track, _ in replay.day[row][:listens]}


def draw_day(replay: Replay, args: argparse.Namespace, rng: np.random.Generator, since: float, until: float) -> None:
    """Each known listener hears --listens tracks and each upload with --upload-share; each new one 40 tracks (enough
    plays for the fold-in steps, within the ranker's recent window of 50). Stamps spread over [since, until]."""
    truth = replay.truth
    for row in range(len(replay.users)):
        known = row < replay.n_known
        day = listening(rng, truth, row, args.listens if known else 40)
        heard = {track for track, _ in day}
        for upload in replay.uploads if known else ():
            col = truth.item_ids.index(upload)
            if upload not in heard and rng.random() < args.upload_share:
                day.insert(int(rng.integers(len(day) + 1)), (upload, bool(rng.random() < truth.liked[row, col])))
        replay.day.append(day)
        replay.stamps.append(np.sort(rng.uniform(since, until, len(day))))


def post_events(client: httpx.Client, url: str, events: list[dict]) -> int:
    accepted = 0
    for start in range(0, len(events), BATCH):
        response = client.post(f"{url}/events", json={"events": events[start : start + BATCH]})
        if response.status_code != 200:
            raise SystemExit(f"error: POST /events answered {response.status_code}: {response.text[:500]}")
        accepted += response.json()["accepted"]
    return accepted


def recommend(client: httpx.Client, url: str, user_id: str, k: int = K) -> tuple[list[str], str]:
    response = client.get(f"{url}/recommend", params={"user_id": user_id, "k": k})
    response.raise_for_status()
    body = response.json()
    return [item["track_id"] for item in body["items"]], body["candidate_source"]


def upload_tracks(client: httpx.Client, url: str, replay: Replay) -> list[float]:
    """POST /embed each upload (the rendered audio of the world track it copies); the seconds each took."""
    paths, seconds = replay.world.audio_paths(), []
    for upload, src in replay.uploads.items():
        path = paths[str(replay.world.tracks["track_id"].iloc[src])]
        started = time.perf_counter()
        with path.open("rb") as fh:
            response = client.post(f"{url}/embed", data={"track_id": upload}, files={"file": (path.name, fh)})
        if response.status_code != 200:
            raise SystemExit(f"error: POST /embed answered {response.status_code}: {response.text[:500]}")
        seconds.append(time.perf_counter() - started)
    return seconds


def foldin_curve(client: httpx.Client, urls: dict[str, str], replay: Replay) -> list[dict]:
    """New listeners' events posted play step by play step; after each step, Recall@20 of /recommend and of the
    popularity answer (their 0-play answer less what they heard since), against their true top 20 unheard."""
    rows = range(replay.n_known, len(replay.users))
    popular = {r: recommend(client, urls["ranker"], replay.users[r], 50)[0] for r in rows}
    posted = dict.fromkeys(rows, 0)
    curve = []
    for plays in PLAY_STEPS:
        events = []
        for r in rows:
            cut = until_plays(replay.day[r], plays)
            events += as_events(replay.users[r], replay.day[r][:cut], replay.stamps[r][:cut], "day1")[posted[r] :]
            posted[r] = cut
        post_events(client, urls["embedder"], events)
        fold, pop, sources, reached = [], [], [], []
        for r in rows:
            heard = heard_by(replay, r, posted[r])
            relevant = true_top(replay.truth.expected_plays[r], replay.truth.item_ids, heard)
            items, source = recommend(client, urls["ranker"], replay.users[r])
            fold.append(recall_at_k(items, relevant))
            pop.append(recall_at_k([t for t in popular[r] if t not in heard], relevant))
            sources.append(source)
            reached.append(sum(played for _, played in replay.day[r][: posted[r]]) >= plays)
        lift = np.asarray(fold) - np.asarray(pop)
        curve.append({"plays": plays, "served": summarize(fold), "popularity": summarize(pop),
                      "paired_difference": summarize(list(lift)),
                      "listeners_with_these_plays": int(sum(reached)),
                      "candidate_sources": pd.Series(sources).value_counts().to_dict()})  # fmt: skip
        print(json.dumps({"foldin": curve[-1]}), flush=True)
    rest = [e for r in rows for e in as_events(replay.users[r], replay.day[r], replay.stamps[r], "day1")[posted[r] :]]
    post_events(client, urls["embedder"], rest)
    return curve


def serve_next_day(client: httpx.Client, url: str, replay: Replay) -> dict:
    """Recall@20 of /recommend for every replayed listener, known and new, and of the uploads, against the true
    top 20 unheard after the replayed day."""
    recall = {"known": [], "new": [], "known_popularity": [], "new_popularity": []}
    popular = recommend(client, url, "replay-nobody", 100)[0]  # what a listener with no events gets
    audience, hits = dict.fromkeys(replay.uploads, 0), dict.fromkeys(replay.uploads, 0)
    sources = []
    for r, user in enumerate(replay.users):
        heard = heard_by(replay, r)
        relevant = true_top(replay.truth.expected_plays[r], replay.truth.item_ids, heard)
        items, source = recommend(client, url, user)
        group = "known" if r < replay.n_known else "new"
        recall[group].append(recall_at_k(items, relevant))
        recall[f"{group}_popularity"].append(recall_at_k([t for t in popular if t not in heard], relevant))
        sources.append(source)
        for upload in set(replay.uploads) & relevant:
            audience[upload] += 1
            hits[upload] += upload in items
    reached = sum(audience.values())
    return {**{f"recall_{group}": summarize(values) for group, values in recall.items()},
            "uploads_recall": round(sum(hits.values()) / reached, 4) if reached else None,
            "uploads_audience": reached, "uploads_hits": int(sum(hits.values())),
            "candidate_sources": pd.Series(sources).value_counts().to_dict(),
            "per_listener": {group: [round(v, 4) for v in values] for group, values in recall.items()}}  # fmt: skip


def paired_change(before: dict, after: dict) -> dict:
    """Per listener, after minus before: the mean change of Recall@20 and its 95% half-width, known and new."""
    return {group: summarize(list(np.subtract(after["per_listener"][group], before["per_listener"][group])))
            for group in ("known", "new")}  # fmt: skip


def sampled_negatives(replay: Replay, rows: list[int], listens: list[list], rng: np.random.Generator) -> list[list]:
    """Next-day plays, each beside one uniformly drawn track its listener has not heard (the retrain's negatives)."""
    paired = []
    for r, day in zip(rows, listens, strict=True):
        unheard = sorted(set(replay.truth.item_ids) - heard_by(replay, r) - {track for track, _ in day})
        plays = [track for track, played in day if played]
        negatives = rng.choice(unheard, size=len(plays), replace=False) if plays else []
        paired.append([(track, True) for track in plays] + [(str(track), False) for track in negatives])
    return paired


def score_both(joined: pd.DataFrame, old: Path, new: Path) -> dict:
    """AUC, GAUC and the paired bootstrap over listeners (training.retrain's) of the old and the new bundle."""
    from sklearn.metrics import roc_auc_score

    from training import retrain

    # the retrain's codebooks are kept (no --refit-codebooks), so both bundles read the same rows; event ids that
    # are not ":neg" (every row counts as logged), and the liking sub-result, the same rows again, is left out
    joined = joined.assign(event_id=[f"replay-next:{i}" for i in range(len(joined))])
    result = retrain.compare({"candidate": joined, "serving": joined}, new, old, n_boot=1000)
    result.pop("liking", None)
    labels = joined["label"].to_numpy(np.int64)
    aucs = {name: float(roc_auc_score(labels, retrain.window_scores(path, joined))) for name, path in
            (("auc_old", old), ("auc_new", new))}  # fmt: skip
    gaucs = {"gauc_old": result.pop("serving"), "gauc_new": result.pop("candidate")}
    return {"rows": len(joined), "positives": int(labels.sum()), **aucs, **gaucs, **result}


def ranker_auc(replay: Replay, rng: np.random.Generator, old: Path, new: Path) -> dict:
    """Both bundles' ranker on the next day (20 unheard tracks per listener, heard by exposure, played by the truth),
    with features as of the next day (the retrain's point-in-time join and scoring path): `listens` is played
    against skipped; `sampled` is played against uniformly drawn unheard tracks (the retrain's protocol)."""
    from encore.store import Store
    from training import retrain

    store, rows, now = Store(EncoreSettings().store()), list(range(len(replay.users))), pd.Timestamp.now(tz="UTC")
    listens = [listening(rng, replay.truth, r, K, heard_by(replay, r)) for r in rows]
    sets = {"listens": listens, "sampled": sampled_negatives(replay, rows, listens, rng)}
    return {name: score_both(retrain.point_in_time(store, next_day_rows(rows, replay.users, day, now)), old, new)
            for name, day in sets.items()}  # fmt: skip


# --- retrain, reload, write ------------------------------------------------------------------------------------


def retrain_and_reload(env: dict[str, str], urls: dict[str, str], args: argparse.Namespace) -> dict:
    """`python -m training.retrain`; a refused candidate is then promoted (as --force would) so the next day can be
    measured on it; every service is reloaded to CURRENT through POST /admin/reload (the bundle watcher's step)."""
    from services.common.bundle_watch import Watcher
    from training import retrain

    artifacts = Path(env["ENCORE_ARTIFACTS_DIR"])
    bundle_id = f"replay-{args.label}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "training.retrain", "--quiet", "--bundle-id", bundle_id, *args.retrain_args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode not in (retrain.EXIT_PROMOTED, retrain.EXIT_NOT_PROMOTED):
        raise SystemExit(f"error: retrain exited {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads((artifacts / retrain.REPORTS / f"{bundle_id}.json").read_text())
    if not report["promoted"]:
        with retrain.retrain_lock(artifacts):
            retrain.promote(artifacts, bundle_id)
    reloads = {name: Watcher(artifacts, url, KEY).step() for name, url in urls.items()}
    keys = ("promoted", "forced", "reason", "evaluation", "train_events", "window", "new_tracks", "serving")
    return {"candidate": bundle_id, "seconds": round(seconds, 1), "command": " ".join(cmd[1:]),
            "promoted_for_measurement": not report["promoted"], "reloads": reloads,
            **{k: report[k] for k in keys}}  # fmt: skip


@contextmanager
def running_stack(env: dict[str, str], base: Path) -> Iterator[dict[str, str]]:
    from services.stack import SERVICES, Stack
    from tests.conftest import free_port

    stack = Stack(env=env, ports={s.name: free_port() for s in SERVICES}, log_dir=base / "logs")
    try:
        stack.start(timeout_s=300)
        yield {s.name: stack.url(s.name) for s in SERVICES}
    finally:
        stack.stop()


def write_results(result: dict) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    label = result["label"]
    (OUT_DIR / f"{label}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    rows = table_rows(result)
    with (OUT_DIR / f"{label}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    render(result)


def render(result: dict) -> None:
    """The docs table and plot of one run (`--render LABEL` redoes them from its committed JSON)."""
    plot_curve(result["foldin"])
    replace_between(TABLE_START, TABLE_END, markdown_table(table_rows(result)))


def replace_between(start: str, end: str, table: str) -> None:
    text = DOC.read_text()
    if start in text:
        head, rest = text.split(start, 1)
        DOC.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def run_settings(args: dict[str, str]) -> str:
    """A run's settings as its JSON keeps them (each a list written as str): --stack-env, then --retrain-args."""

    def items(key: str) -> list[str]:
        return [s for s in args.get(key, "[]").strip("[]").replace("'", "").split(", ") if s]

    retrain = " ".join(items("retrain_args"))
    return ", ".join(items("stack_env") + ([f"retrain {retrain}"] if retrain else [])) or "defaults"


def compare_runs(labels: list[str]) -> str:
    """Side by side, runs of different settings (their `--stack-env` and `--retrain-args`): who loses the new
    listeners after a retrain, whether the retrain was promoted on its own verdict, whether the ranker tells
    played from skipped on the next day (GAUC, old bundle and new), and the uploads' reach (old bundle and new)."""
    rows = []
    for label in labels:
        run = json.loads((OUT_DIR / f"{label}.json").read_text())
        day, promoted = run["next_day"], "yes" if run["retrain"]["promoted"] else "no"
        cells = [f"{day[when][f'recall_{group}']['mean']:.4f}" for group in ("known", "new") for when in ("old", "new")]
        cells += [f"{day['auc']['listens'][f'gauc_{when}']:.4f}" for when in ("old", "new")]
        cells += [f"{day[when]['uploads_recall']:.4f}" for when in ("old", "new")]
        after_10 = next(step["served"]["mean"] for step in run["foldin"] if step["plays"] == 10)
        rows.append(f"| {label} | {run_settings(run['args'])} | {after_10:.4f} | " + " | ".join(cells)
                    + f" | {promoted} | {run['when']} |")  # fmt: skip
    head = (
        "| run | settings | new, fold-in after 10 plays | known, old bundle | known, new bundle | new, old bundle "
        "| new, new bundle | GAUC played vs skipped, old | GAUC played vs skipped, new | uploads' recall, old "
        "| uploads' recall, new | promoted | when |"
    )
    return "\n".join([head, "|" + "---|" * 13, *rows])


def table_rows(result: dict) -> list[dict]:
    """One row per measured quantity: before (popularity / old bundle), after (fold-in / new bundle), and the paired
    difference per listener (GAUC: the paired bootstrap over listeners) with its 95% interval."""
    day = result["next_day"]
    old, new, auc = day["old"], day["new"], day["auc"]
    # fmt: off
    specs = [(f"new listeners, Recall@20 after {s['plays']} plays", "popularity", s["popularity"]["mean"],
              s["served"]["mean"], s["paired_difference"], s["served"]["n"]) for s in result["foldin"]]
    for group in ("known", "new"):
        key, popular = f"recall_{group}", f"recall_{group}_popularity"
        specs.append((f"next day, {group} listeners, Recall@20", "old bundle", old[key]["mean"], new[key]["mean"],
                      day["recall_change"][group], new[key]["n"]))
        specs.append((f"next day, {group} listeners, popularity's Recall@20 (reference)", "old bundle's popularity",
                      old[popular]["mean"], new[popular]["mean"], None, new[popular]["n"]))
    specs.append(("next day, uploads' recall (share of their true audience given them)", "old bundle",
                  old["uploads_recall"], new["uploads_recall"], None, new["uploads_audience"]))
    for name, what in (("listens", "played vs skipped"), ("sampled", "played vs sampled unheard")):
        s = auc[name]
        specs.append((f"next day, ranker AUC, {what}", "old bundle", round(s["auc_old"], 4), round(s["auc_new"], 4),
                      None, s["rows"]))
        specs.append((f"next day, ranker GAUC, {what}", "old bundle", round(s["gauc_old"], 4),
                      round(s["gauc_new"], 4), f"{s['diff']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]", s["rows"]))
    # fmt: on
    return [table_row(*spec) for spec in specs]


def table_row(measure: str, baseline: str, before: float, after: float, diff: dict | str | None, n: int) -> dict:
    change = diff if isinstance(diff, str) or diff is None else f"{diff['mean']:+.4f} ± {diff['ci95']:.4f}"
    return {"measure": measure, "baseline": baseline, "before": before, "after": after,
            "difference_95": change or "", "n": n}  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join([*lines, *("| " + " | ".join(str(row[c]) for c in cols) + " |" for row in rows)])


def plot_curve(curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plays = [step["plays"] for step in curve]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, name, shift in (("served", "fold-in (/recommend)", -0.08), ("popularity", "popularity", 0.08)):
        means = np.array([step[key]["mean"] for step in curve])
        half = np.array([step[key]["ci95"] for step in curve])
        ax.errorbar(np.add(plays, shift), means, yerr=half, marker="o", capsize=3, label=name)  # side by side
    ax.set(xlabel="plays of a new listener", ylabel="Recall@20 (true top 20 unheard)", xticks=plays)
    ax.set_title("New listeners: fold-in against popularity (quick world)", fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def replay_run(args: argparse.Namespace, env: dict[str, str], base: Path) -> dict:
    from encore.artifacts import current_bundle_path
    from training.datasets.synthetic import load_world, world_params

    rng = np.random.default_rng(args.seed)
    replay = draw_replay(load_world(world_params("quick"), progress=False), args, rng)
    old = current_bundle_path(Path(env["ENCORE_ARTIFACTS_DIR"]))
    with running_stack(env, base) as urls, httpx.Client(timeout=120, headers={"X-API-Key": KEY}) as client:
        embed_s = upload_tracks(client, urls["embedder"], replay)
        since = time.time()
        time.sleep(3)  # the replayed "day", compressed into the seconds after the uploads (no event from the future)
        draw_day(replay, args, rng, since, time.time())
        known = [e for r in range(replay.n_known) for e in as_events(replay.users[r], replay.day[r],
                                                                      replay.stamps[r], "day1")]  # fmt: skip
        started = time.perf_counter()
        post_events(client, urls["embedder"], known)
        known_s = time.perf_counter() - started
        foldin = foldin_curve(client, urls, replay)
        before = serve_next_day(client, urls["ranker"], replay)
        print(json.dumps({"next_day_old": {k: v for k, v in before.items() if k != "per_listener"}}), flush=True)
        retrained = retrain_and_reload(env, urls, args)
        print(json.dumps({"retrain": {k: retrained[k] for k in ("promoted", "reason", "reloads")}}), flush=True)
        after = serve_next_day(client, urls["ranker"], replay)
        print(json.dumps({"next_day_new": {k: v for k, v in after.items() if k != "per_listener"}}), flush=True)
    auc = ranker_auc(replay, rng, old, Path(env["ENCORE_ARTIFACTS_DIR"]) / retrained["candidate"])
    print(json.dumps({"auc": auc}), flush=True)
    day_events = sum(len(day) for day in replay.day)
    return {"events": {"day": day_events, "plays": int(sum(p for day in replay.day for _, p in day)),
                       "known_post_seconds": round(known_s, 1)},
            "uploads": {"ids": replay.uploads, "embed_seconds": [round(s, 2) for s in embed_s]},
            "foldin": foldin, "retrain": retrained,
            "next_day": {"old_bundle": old.name, "old": before, "new": after,
                         "recall_change": paired_change(before, after), "auc": auc}}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="quick", help="names docs/results/replay/<label>.json and .csv")
    parser.add_argument("--world", type=Path, default=None, help="a bootstrapped world's folder (default: a new one)")
    parser.add_argument("--project", default="replay", help="ENCORE_FEAST_PROJECT of that world")
    parser.add_argument("--online", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--known", type=int, default=150, help="world listeners replayed")
    parser.add_argument("--new", type=int, default=40, help="listeners the bundle does not know")
    parser.add_argument("--uploads", type=int, default=3, help="tracks uploaded through POST /embed")
    parser.add_argument("--listens", type=int, default=30, help="catalogue listens per known listener")
    parser.add_argument("--upload-share", type=float, default=0.3, help="share of known listeners hearing an upload")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument(
        "--stack-env",
        action="append",
        default=[],
        metavar="ENCORE_X=VALUE",
        help="a setting for the stack and the retrain (repeat), e.g. ENCORE_RETRIEVER_FOLDIN_PRIOR=0",
    )
    parser.add_argument("--retrain-args", nargs=argparse.REMAINDER, default=[], help="passed to training.retrain")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--render", metavar="LABEL", help="only redo the docs table and plot from LABEL's JSON")
    parser.add_argument("--compare", metavar="LABELS", help="only write the comparison table of these runs (a,b,...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render or args.compare:
        if args.render:
            render(json.loads((OUT_DIR / f"{args.render}.json").read_text()))
        if args.compare:
            replace_between(COMPARE_START, COMPARE_END, compare_runs(args.compare.split(",")))
        return 0
    with tempfile.TemporaryDirectory(prefix="encore-replay-") as tmp:
        base = args.world or Path(tmp)
        # The world's cache stays where this process's load_world finds it (the same world, built once).
        env = world_env(base, args, cache_dir=EncoreSettings().cache_dir)
        env |= dict(setting.split("=", 1) for setting in args.stack_env)
        os.environ.update(env)  # this process reads the same store (point-in-time join) and world as the stack
        started = time.perf_counter()
        if args.world is None or not (base / "artifacts").exists():
            print("bootstrapping a quick world ...", flush=True)
            bootstrap(env)
        result = {"label": args.label, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "cores": os.cpu_count(), "store": args.online, "world": "quick",
                  "command": "python -m benchmarks.replay " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "args": {k: str(v) for k, v in vars(args).items()}, **replay_run(args, env, base)}  # fmt: skip
        result["seconds"] = round(time.perf_counter() - started, 1)
    if not args.no_write:
        write_results(result)
        print(f"wrote {OUT_DIR.relative_to(ROOT)}/{args.label}.json, .csv, {PLOT.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
