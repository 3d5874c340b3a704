"""Retraining from the feature store: logged events -> point-in-time training set -> candidate bundle -> promotion.

    .venv/bin/python -m training.retrain [--epochs 3] [--margin 0.01] [--holdout-share 0.2] [--force]
                                         [--refit-codebooks]
    .venv/bin/python -m training.retrain --rollback

1. The event log (the Feast file source `events_parquet`) is read, each event labelled by `encore.events.label`,
   and the newest `--holdout-share` of labelled events kept apart as the evaluation window. The bootstrap's
   history (its protocol splits' plays, logged by training/bootstrap.py with ids `_history:<split>:<n>`) comes from
   the same log: the retrain reads the store only, never the synthetic world.
2. One negative per positive (a track the listener has no event for) is drawn; the window's are drawn once, saved
   and hashed (`retrain-reports/eval-<window>.parquet`), so every model compared on that window meets the same ones.
3. User and track features are joined onto every row with Feast's `get_historical_features`, as they were at the
   event's time (tracks uploaded since the last bundle included: they live in the store's track views).
4. The ranker (keeping the serving bundle's codebooks, or with --refit-codebooks new ones fit on the training
   tracks' pooled layers, kept in the store by encore/track_layers.py, every stored track re-tokenized with them)
   and the retriever are trained on the bootstrap's logged training plays plus the events before the window, into
   a new bundle (BundleBuilder: atomic, not yet CURRENT).
5. Candidate and serving bundle score the window; the candidate is promoted (CURRENT moves, services follow) when
   the lower end of the 95% paired-bootstrap interval (over users) of GAUC(candidate) - GAUC(serving) is at least
   -margin, or with --force. A report (JSON and markdown) in `retrain-reports/` says why, and whether the codebooks
   were kept or refit (their version). Before CURRENT moves, every stored track whose content names other codebooks
   than the candidate's is re-tokenized (store_content_of; a no-op when they were kept); the ranker serves rows of
   other codebooks without audio meanwhile (docs/events.md "Codebooks").
A lock file in the artifacts folder and a lock in the store (Redis: shared by every node, renewed while the job
runs; encore/job_lock.py) refuse a second retrain while one runs; `--rollback` restores the bundle that CURRENT
named before the last promotion.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore import track_layers
from encore.artifacts import BundleBuilder, current_bundle_path, load_bundle, set_current
from encore.audio.codebooks import Codebooks
from encore.audio.content import ContentComponent, foreign_rows, split_revision
from encore.bundle_check import BUNDLE_ID
from encore.errors import EncoreError
from encore.events import EventLog, activity_before, history_split, is_history, label, profile_before
from encore.io import sha256_file, write_json_atomic, write_parquet_atomic, write_text_atomic
from encore.job_lock import HeldLock, JobLocked, job_lock
from encore.ranker_frame import ACTIVITY_COLUMNS, CONTENT_AFFINITY, PROFILE, PROFILE_N, training_frame
from encore.settings import EncoreSettings
from encore.store import Store
from training import bootstrap as boot

LOCK_FILE = ".retrain.lock"
PREVIOUS = "PREVIOUS"  # beside CURRENT: the bundle CURRENT named before the last promotion (for --rollback)
REPORTS = "retrain-reports"
METRIC = "gauc"  # per-listener AUC averaged with rows as weights (training/metrics.py)
DEFAULT_MARGIN = 0.01
DEFAULT_HOLDOUT_SHARE = 0.2
EXIT_PROMOTED, EXIT_NOT_PROMOTED, EXIT_ERROR, EXIT_LOCKED = 0, 1, 2, 3
STRICTLY_BEFORE = pd.Timedelta(microseconds=1)  # the join's time is this much before the event's
ROW = "row"  # the entity frame's row number: Feast returns its rows in another order
INT_FIELDS = tuple(n for n in (*fn.USER_PROFILE_FIELDS, *fn.TRACK_META_FIELDS) if fn.FIELD_DTYPES[n] == "Int64")
FEATURE_REFS = [
    *(f"{fn.USER_PROFILE}:{n}" for n in fn.USER_PROFILE_FIELDS),
    *(f"{fn.TRACK_META}:{n}" for n in fn.TRACK_META_FIELDS),
    *(f"{fn.TRACK_CONTENT}:{n}" for n in fn.TRACK_CONTENT_ARRAYS),
    f"{fn.TRACK_CONTENT}:encoder_revision",  # names the codebooks the row's tokens are of (with_content)
]


class RetrainLocked(EncoreError):
    """Another retrain holds the lock."""


@contextmanager
def retrain_lock(root: Path) -> Iterator[None]:
    """An flock on `root/.retrain.lock` (released by the OS if its holder dies); refuses at once when held."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainLocked(f"another retrain holds {root / LOCK_FILE}; try again when it has finished") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- 1. events and labels ----------------------------------------------------------------------------------


def labelled_events(store: Store) -> pd.DataFrame:
    """The events of POST /events, each once, labelled (labelled_log); the bootstrap's history left out."""
    events = labelled_log(store)
    return events[~is_history(events[fn.EVENT_ID])].reset_index(drop=True)


def labelled_log(store: Store) -> pd.DataFrame:
    """Every logged event once (encore.events.EventLog.read), the bootstrap's history included, with its label;
    events without one are dropped."""
    log = EventLog(store)
    try:
        events = log.read()
    finally:
        log.close()
    labels = [label(t, None if ms < 0 else int(ms)) for t, ms in zip(events["type"], events["ms"], strict=True)]
    events = events.assign(label=pd.array(labels, dtype="Int64")).dropna(subset=["label"])
    columns = [fn.EVENT_ID, fn.USER_ID, fn.TRACK_ID, fn.EVENT_TIMESTAMP, "label"]
    return events[columns].astype({"label": "int64"}).reset_index(drop=True)


def split_window(events: pd.DataFrame, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events before the window, the window): the newest `holdout_share` of events by time, ties kept together."""
    if len(events) < 10:
        raise EncoreError(f"{len(events)} labelled events in the log: too few to train and evaluate on")
    ordered = events.sort_values([fn.EVENT_TIMESTAMP, fn.EVENT_ID], kind="stable").reset_index(drop=True)
    cut = ordered[fn.EVENT_TIMESTAMP].iloc[int(len(ordered) * (1 - holdout_share))]
    before, window = ordered[ordered[fn.EVENT_TIMESTAMP] < cut], ordered[ordered[fn.EVENT_TIMESTAMP] >= cut]
    if before.empty or window[window.label == 1].empty:
        raise EncoreError("the held-out window leaves no events to train on, or holds no positive")
    return before.reset_index(drop=True), window.reset_index(drop=True)


def with_negatives(events: pd.DataFrame, tracks: list[str], interacted: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`events` plus, per positive, one uniformly drawn track its listener has no event (or play) for, at the same
    time, label 0 (docs/events.md)."""
    seen = set(zip(interacted[fn.USER_ID].astype(str), interacted[fn.TRACK_ID].astype(str), strict=True))
    rng = np.random.default_rng(seed)
    positives = events[events.label == 1]
    negatives = []
    columns = (positives[fn.USER_ID], positives[fn.EVENT_TIMESTAMP], positives[fn.EVENT_ID])
    for user, when, event_id in zip(*columns, strict=True):
        for _ in range(100):  # rejection: a listener has heard few of the catalogue's tracks
            track = tracks[int(rng.integers(len(tracks)))]
            if (user, track) not in seen:
                negatives.append((f"{event_id}:neg", user, track, when, 0))
                break
    frame = pd.DataFrame(negatives, columns=list(events.columns))
    return pd.concat([events, frame.astype(events.dtypes.to_dict())], ignore_index=True)


def frozen_window(window: pd.DataFrame, tracks: list[str], interacted: pd.DataFrame, folder: Path) -> tuple:
    """The window with its negatives, drawn once (seed 0) and saved under a name made of the window's event ids;
    a later run on the same window reads them back. Returns (frame, path, sha256)."""
    key = hashlib.sha256("\n".join(sorted(window[fn.EVENT_ID])).encode()).hexdigest()[:16]
    path = folder / f"eval-{key}.parquet"
    if not path.exists():
        write_parquet_atomic(path, with_negatives(window, tracks, interacted, seed=0))
    return pd.read_parquet(path), path, sha256_file(path)


class History:
    """The bootstrap's history read back from the log as the protocol splits it was trained on
    (training.datasets.protocol): `train_positives` (every observed training row, label 0 or 1), `evals` (valid and
    test: observed rows plus one never-interacted track each, drawn once), `sampler(epoch, seed)` (training rows
    with fresh negatives from the training tracks, excluding the listener's training rows) and `train_items`.
    Ids are strings; the protocol's sampler works on integer codes of them."""

    def __init__(self, log: pd.DataFrame, interacted: pd.DataFrame):
        from training.datasets.protocol import LABEL, NegativeSampler, ProtocolConfig

        rows = log[is_history(log[fn.EVENT_ID])]
        split = history_split(rows[fn.EVENT_ID]).to_numpy()
        parts = {name: rows[split == name].reset_index(drop=True) for name in boot.HISTORY_SPLITS}
        if parts["train"].empty or parts["valid"].empty or parts["test"].empty:
            raise EncoreError(f"the event log holds no bootstrap history to train on ({self.counts(parts)}): "
                              "run python -m training.bootstrap to log it")  # fmt: skip
        self.sizes = self.counts(parts)
        pairs = pd.concat([rows[[fn.USER_ID, fn.TRACK_ID]], interacted[[fn.USER_ID, fn.TRACK_ID]]]).astype(str)
        self._users = pd.Index(pairs[fn.USER_ID].unique())
        self._tracks = pd.Index(pairs[fn.TRACK_ID].unique())
        self.train_positives = parts["train"][[fn.USER_ID, fn.TRACK_ID, LABEL]]
        self.train_items = np.sort(self.train_positives[fn.TRACK_ID].unique())
        cfg, coded = ProtocolConfig(), {name: self._encode(part) for name, part in parts.items()}
        everything, pool = self._encode(pairs), self._tracks.get_indexer(rows[fn.TRACK_ID].unique())
        self.evals = {}
        for index, name in enumerate(boot.HISTORY_SPLITS[1:]):  # as apply_protocol draws them: seed, its own RNG
            sampler = NegativeSampler(coded[name], pool, everything, cfg.negatives, 0)
            self.evals[name] = self._decode(sampler.rows(np.random.default_rng([cfg.seed, 100 + index])))
        train = coded["train"]
        self._sampler = NegativeSampler(train, self._tracks.get_indexer(self.train_items), train, cfg.negatives,
                                        cfg.seed)  # fmt: skip

    @staticmethod
    def counts(parts: dict[str, pd.DataFrame]) -> dict[str, int]:
        return {name: int(len(part)) for name, part in parts.items()}

    def _encode(self, rows: pd.DataFrame) -> pd.DataFrame:
        coded = pd.DataFrame({fn.USER_ID: self._users.get_indexer(rows[fn.USER_ID].astype(str)),
                              fn.TRACK_ID: self._tracks.get_indexer(rows[fn.TRACK_ID].astype(str))})  # fmt: skip
        return coded.assign(label=rows["label"].to_numpy()) if "label" in rows else coded

    def _decode(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(
            **{
                fn.USER_ID: self._users[rows[fn.USER_ID].to_numpy()].to_numpy(dtype=object),
                fn.TRACK_ID: self._tracks[rows[fn.TRACK_ID].to_numpy()].to_numpy(dtype=object),
            }
        )

    def sampler(self, epoch: int, seed: int = 0) -> pd.DataFrame:
        """The history's training rows for `epoch` of the run with seed `seed`, with fresh negatives."""
        return self._decode(self._sampler(epoch, seed))


# --- 2. point-in-time features -------------------------------------------------------------------------------


def point_in_time(store: Store, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (user_id, track_id, event_timestamp, ...) with every user and track feature as it was just before the
    row's time: Feast's point-in-time join, asked as of 1 µs before each event, since Feast's is inclusive (a row
    stamped at the event's own time counts), and an aggregate stamped with its event would leak that event's label.
    Rows keep their order; a feature with no row by then is missing (NaN / None).

    Feast keeps one entity row per (join keys so far, time): a negative beside its positive (same listener, same
    time) would vanish. So the rows are joined in passes, each with (user, time) and (track, time) unique."""
    rest = rows.reset_index(drop=True).assign(**{ROW: np.arange(len(rows))})
    rest[fn.EVENT_TIMESTAMP] = pd.to_datetime(rest[fn.EVENT_TIMESTAMP], utc=True) - STRICTLY_BEFORE
    parts = []
    while len(rest):
        batch = rest[~rest.duplicated([fn.USER_ID, fn.EVENT_TIMESTAMP])]
        batch = batch[~batch.duplicated([fn.TRACK_ID, fn.EVENT_TIMESTAMP])]
        parts.append(store.feast.get_historical_features(entity_df=batch, features=FEATURE_REFS).to_df())
        rest = rest[~rest[ROW].isin(batch[ROW])]
    joined = pd.concat(parts, ignore_index=True).sort_values(ROW).reset_index(drop=True)
    if joined[ROW].tolist() != list(range(len(rows))):
        raise EncoreError(f"the point-in-time join returned {len(joined)} rows for {len(rows)}")
    joined[fn.EVENT_TIMESTAMP] = joined[fn.EVENT_TIMESTAMP] + STRICTLY_BEFORE
    joined = joined.drop(columns=[ROW])
    log = EventLog(store)
    try:  # recent-event features and the content profile, from the listener's events strictly before each row
        events = log.read()
    finally:
        log.close()
    activity = activity_before(events, joined)
    content = store.read_offline(fn.TRACK_CONTENT)  # the vectors the embedder folds into the online profile
    vectors = dict(zip(content[fn.TRACK_ID].astype(str), content["embedding"], strict=True))
    profile = profile_before(events, joined, vectors)
    drop = [c for c in (*ACTIVITY_COLUMNS, PROFILE, PROFILE_N) if c in joined]
    return pd.concat([joined.drop(columns=drop), activity, profile], axis=1)


def activity_fields() -> list:
    """The recent-event features as ranker fields (user-owned numerics, quantile-bucketized like n_plays)."""
    from encore.schema import FieldConfig

    return [FieldConfig(c, "numeric", owner="user", numeric_mode="quantile", n_buckets=10) for c in ACTIVITY_COLUMNS]


def affinity_fields() -> list:
    """The (listener, track) content affinity as a ranker field: cosine of the listener's content profile as of the
    row and the track's embedding (encore.ranker_frame.content_affinity), scaled, not bucketized: most training
    rows (the bootstrap's history, listeners without events) are 0, which would leave quantile edges at 0 alone.
    Owned by the user: the cold calibration's panel (reference listeners without events) gets 0 in its place."""
    from encore.schema import FieldConfig

    return [FieldConfig(CONTENT_AFFINITY, "numeric", owner="user", numeric_mode="scale")]


def ranker_rows(joined: pd.DataFrame, fields: list) -> pd.DataFrame:
    """The ranker's frame of point-in-time joined rows: each row is keyed by its own number in the feature tables
    handed to the ranker's frame builder (encore.ranker_frame, the one serving uses), so a listener or track keeps
    the values it had at that row's time, then the real ids are put back."""
    keys = np.array([f"r{i}" for i in range(len(joined))], dtype=object)
    keyed = joined.assign(**{ROW: keys})

    def table(key: str, columns: tuple[str, ...], present: str) -> pd.DataFrame:
        part = keyed.loc[keyed[present].notna(), [ROW, *columns]].rename(columns={ROW: key})
        ints = {c: "int64" for c in columns if c in INT_FIELDS}
        return part.astype(ints).reset_index(drop=True)

    users = table(fn.USER_ID, fn.USER_PROFILE_FIELDS, "country")
    meta = table(fn.TRACK_ID, fn.TRACK_META_FIELDS, "genre")
    content = table(fn.TRACK_ID, fn.TRACK_CONTENT_ARRAYS, "embedding")
    rows = pd.DataFrame({fn.USER_ID: keys, fn.TRACK_ID: keys, "label": joined["label"].to_numpy()})
    for column in (*ACTIVITY_COLUMNS, PROFILE, PROFILE_N):  # as of each row (point_in_time); read from the rows
        if column in joined:
            rows[column] = joined[column].to_numpy()
    frame = training_frame(rows, users, meta, content, fields)
    for column in (fn.USER_ID, fn.TRACK_ID):
        if column in frame:
            frame[column] = joined[column].astype(str).to_numpy(dtype=object)
    return frame


# --- 3. the candidate bundle -----------------------------------------------------------------------------------


def store_tables(store: Store) -> boot.FeatureTables:
    """The store's latest rows (training snapshot plus uploads since): what the bootstrap's rows are joined with."""
    users, meta, content = (store.read_offline(v) for v in (fn.USER_PROFILE, fn.TRACK_META, fn.TRACK_CONTENT))
    return boot.FeatureTables(
        users[[fn.USER_ID, *fn.USER_PROFILE_FIELDS]],
        meta[[fn.TRACK_ID, *fn.TRACK_META_FIELDS]],
        content[[fn.TRACK_ID, *fn.TRACK_CONTENT_FIELDS]],
    )


# --- the candidate's codebooks: kept, or refit with every stored track re-tokenized ----------------------------


@dataclass
class CandidateContent:
    """The candidate's content: the serving bundle's codebooks kept, or refit (`--refit-codebooks`); what the
    candidate trains with (`tables`: the store's rows, their content re-tokenized after a refit)."""

    content: ContentComponent  # written into the candidate (its codebooks_sha256 set then)
    tables: boot.FeatureTables  # the store's rows; their content the candidate's once it is written
    serving_rows: pd.DataFrame  # the stored track_content rows of the serving codebooks (what serving scores with)
    previous: str  # the serving codebooks' version
    refit: bool = False
    layers: tuple[list[str], np.ndarray] | None = None  # every stored track's pooled layers (refit only)
    fit_tracks: int = 0  # the training tracks the refit was fit on
    version: str = ""  # the candidate's codebooks version, once written

    def report(self) -> dict[str, Any]:
        """The report's `codebooks` entry."""
        entry = {"refit": self.refit, "version": self.version, "serving_version": self.previous}
        if self.refit:
            entry |= {"fit_tracks": self.fit_tracks, "retokenized": len(self.layers[0]) if self.layers else 0}
        return entry


def candidate_content(args: argparse.Namespace, store: Store, serving: Any, splits: History,
                      events: pd.DataFrame) -> CandidateContent:  # fmt: skip
    """Keep the serving codebooks, or with --refit-codebooks fit new ones (same k, groups and tokenized layers, the
    next seed) on the training tracks' pooled layers: the bootstrap's training items and the tracks of the events
    before the window (never the window's). Refused before any training when a stored track has no pooled layers
    to re-tokenize (stored_layers)."""
    kept = ContentComponent.read(serving)
    tables = store_tables(store)  # every row of the serving codebooks (retrain ran store_content_of first)
    if not args.refit_codebooks:
        return CandidateContent(kept, tables, tables.track_content, kept.version)
    ids, layers = stored_layers(store, kept, tables.track_content[fn.TRACK_ID].astype(str).tolist())
    train_items = set(np.asarray(splits.train_items).astype(str)) | set(events[fn.TRACK_ID].astype(str))
    train = np.array([i for i, t in enumerate(ids) if t in train_items])
    books = kept.codebooks
    seed = int(books.meta.get("seed", 0)) + 1  # another fit than the serving one, even on the same tracks
    try:
        refit = Codebooks.fit(layers[train], encoder_info=books.encoder_info, k=books.k, groups=books.groups,
                              seed=seed, tokenize_layers=list(books.tokenized))  # fmt: skip
    except ValueError as exc:
        raise EncoreError(f"the codebooks cannot be refit: {exc}") from None
    refit.meta["refit_from"] = kept.version
    print(f"[retrain] codebooks refit on {len(train)} training tracks (serving version {kept.version})", flush=True)
    return CandidateContent(replace(kept, codebooks=refit, codebooks_sha256=""), tables, tables.track_content,
                            kept.version, True, (ids, layers), len(train))  # fmt: skip


def stored_layers(store: Store, content: ContentComponent, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(ids, (N, total) pooled layers) of the stored tracks `ids`, as the store keeps them (encore/track_layers.py:
    the bootstrap's catalog, the embedder's uploads; the newest row of a track wins, so an upload over a catalog id
    does). EncoreError naming the tracks without (say, uploaded before layers were kept): those cannot be
    re-tokenized."""
    books = content.codebooks
    kept = track_layers.read(store.settings.data_dir)
    info = books.encoder_info
    kept = kept[(kept["encoder"] == info.get("backend")) & (kept["revision"] == info.get("revision"))]
    found = dict(zip(kept[fn.TRACK_ID], kept["layers"], strict=True))
    width = sum(books.layout.widths)
    missing = [t for t in ids if t not in found or found[t].shape != (width,)]
    if missing:
        raise EncoreError(
            f"{len(missing)} stored track(s) have no kept pooled layers of encoder {content.encoder!r}, e.g. "
            f"{missing[:3]} (uploaded before the embedder kept them), so they cannot be re-tokenized: upload them "
            "again with overwrite=true or delete them (a retrain without --refit-codebooks keeps the codebooks)"
        )
    return ids, np.stack([found[t] for t in ids]).astype(np.float32)


def content_table(store: Store, content: ContentComponent, layers: tuple[list[str], np.ndarray]) -> pd.DataFrame:
    """The store's track_content rows of `layers`' tracks, computed with `content`'s codebooks (written into a
    bundle: its version set): what the bootstrap and the embedder store (ContentComponent.features), tags kept."""
    stored = store.read_offline(fn.TRACK_CONTENT)
    model_revision = split_revision(str(stored["encoder_revision"].mode().iloc[0]))[0]
    tags = dict(zip(stored[fn.TRACK_ID].astype(str), stored["tags"].astype(str), strict=True))
    ids, matrix = layers
    return boot.track_content(ids, matrix, content, content.revision(model_revision), tags)


def with_content(joined: pd.DataFrame, track_content: pd.DataFrame, version: str) -> pd.DataFrame:
    """`joined` (point_in_time rows) with each row's content of other codebooks than `version` replaced by its
    track's row in `track_content` (rows of `version`; missing when it has none): the Feast history keeps the rows
    stored before a refit, and a model reads tokens of its own codebooks only. Rows of `version` keep their as-of
    values, so a retrain that keeps the codebooks joins as it always did."""
    has = joined["embedding"].notna().to_numpy()
    foreign = has & foreign_rows(joined["encoder_revision"].to_numpy(dtype=object), version)
    if not foreign.any():
        return joined
    table = track_content.set_index(track_content[fn.TRACK_ID].astype(str))
    rows = table.index.get_indexer(joined[fn.TRACK_ID].astype(str))
    out = joined.copy()
    for name in (*fn.TRACK_CONTENT_ARRAYS, "encoder_revision"):
        values, source = out[name].to_numpy(dtype=object).copy(), table[name].to_numpy(dtype=object)
        for i in np.flatnonzero(foreign):  # one by one: numpy would stack a list of arrays into a matrix
            values[i] = source[rows[i]] if rows[i] >= 0 else None
        out[name] = values
    return out


def weighted_events(extra: pd.DataFrame, events: pd.DataFrame, weight: int) -> pd.DataFrame:
    """The ranker's rows of `events` (aligned with them) with each logged event's row (a play or a skip, not a
    sampled `:neg`) `weight` (>= 1) times: how much the events' play/skip signal counts against the bootstrap's
    history."""
    logged = ~events[fn.EVENT_ID].astype(str).str.endswith(":neg").to_numpy()
    repeats = [extra.loc[logged]] * (weight - 1)
    return pd.concat([extra, *repeats], ignore_index=True)


def train_candidate(
    args: argparse.Namespace,
    store: Store,
    serving: Any,
    events: pd.DataFrame,
    splits: History,
    chosen: CandidateContent,
) -> str:
    """Train ranker and retriever on the bootstrap's logged history plus `events` (with their negatives) into a new
    bundle whose content component is `chosen`'s (the serving codebooks kept, or a refit); returns its id (not
    CURRENT yet) and sets `chosen.version`."""
    tables = chosen.tables
    bundle_id = args.bundle_id or f"retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    with BundleBuilder(boot.artifacts_dir(), bundle_id, make_current=False) as bundle:
        content = chosen.content.write(bundle)  # versioned codebooks: the serving ones, or the refit
        if chosen.refit:  # every stored track's content of the new codebooks, as promotion will store it
            assert chosen.layers is not None
            tables.track_content = content_table(store, content, chosen.layers)
        fields = boot.ranker_fields(content.codebooks.n_fields, content.dense_width)
        if args.activity_features:  # recent-event features (docs/events.md): the candidate's spec reads them
            fields += activity_fields()
        if args.affinity_feature:  # the (listener, track) content affinity (docs/events.md)
            fields += affinity_fields()
        joined = with_content(point_in_time(store, events), tables.track_content, content.version)
        extra = weighted_events(ranker_rows(joined, fields), events, args.event_weight)
        first = boot.ranker_frame(splits.sampler(1, args.seed), tables, fields)
        boot.train_ranker(args, splits, tables, fields, first, bundle, extra_frame=extra)
        plays = pd.concat([splits.train_positives[[fn.USER_ID, fn.TRACK_ID]].astype(str),
                           events.loc[events.label == 1, [fn.USER_ID, fn.TRACK_ID]]])  # fmt: skip
        revision = tables.track_content["encoder_revision"].mode().iloc[0]
        encoder = {"encoder": content.encoder, "encoder_revision": str(revision)}
        boot.train_retriever(args, plays, tables.track_content[fn.TRACK_ID].tolist(), tables, encoder, bundle)
        retrained = {"retrained_from": serving.id, "events": int(len(events))}
        bundle.manifest["dataset"] = serving.manifest.get("dataset", {}) | retrained
    chosen.version = content.version
    return bundle_id


# --- 4, 5. evaluation and the promotion rule -------------------------------------------------------------------


def window_scores(bundle_path: Path, joined: pd.DataFrame) -> np.ndarray:
    """The bundle's ranker scores of the window's rows (its own spec, its ONNX graph, as the ranker serves it)."""
    from encore.onnx_scorer import OnnxScorer
    from encore.ranker_bundle import RankerComponent

    ranker = RankerComponent.read(load_bundle(bundle_path))
    frame = ranker_rows(joined, list(ranker.spec.fields))
    assert ranker.onnx_path is not None
    return np.asarray(OnnxScorer(ranker.onnx_path).score(ranker.spec.encode_packed(frame)), dtype=np.float64)


def compare(joined: dict[str, pd.DataFrame], candidate: Path, serving: Path, n_boot: int) -> dict[str, Any]:
    """GAUC of both bundles on the window and the paired bootstrap over listeners of their difference. `joined`:
    the window's rows for "candidate" and "serving", the same rows, each with content of that bundle's codebooks."""
    from training.metrics import per_group_auc, weighted_gauc
    from training.significance import bootstrap_gauc_diff

    rows = joined["serving"]
    labels, users = rows["label"].to_numpy(np.int64), rows[fn.USER_ID].astype(str).to_numpy()
    logged = ~rows[fn.EVENT_ID].astype(str).str.endswith(":neg").to_numpy()  # the window's own events
    per, liking = {}, {}
    for name, path in (("candidate", candidate), ("serving", serving)):
        scores = window_scores(path, joined[name])
        per[name] = per_group_auc(labels, scores, users).rename(columns={"group": "user"})
        liking[name] = per_group_auc(labels[logged], scores[logged], users[logged]).rename(columns={"group": "user"})
    if per["serving"].empty:
        raise EncoreError("no listener in the window has both a positive and a negative: no GAUC to compare")
    test = bootstrap_gauc_diff([per["candidate"]], [per["serving"]], n_boot=n_boot, seed=0)
    result = {"candidate": weighted_gauc(per["candidate"]), "serving": weighted_gauc(per["serving"]), **test}
    # Reported beside, not decided on: played/liked against skipped/disliked alone, whether a bundle tells liking
    # apart, which sampled negatives cannot show (docs/events.md "Replay": both bundles sit near chance on it).
    if not liking["serving"].empty:
        diff = bootstrap_gauc_diff([liking["candidate"]], [liking["serving"]], n_boot=n_boot, seed=0)
        result["liking"] = {"candidate": weighted_gauc(liking["candidate"]),
                            "serving": weighted_gauc(liking["serving"]), **diff}  # fmt: skip
    return result


def decide(result: dict[str, Any], margin: float, force: bool) -> tuple[bool, str]:
    """Promote when the candidate is not worse than serving beyond `margin` with 95% confidence: the low end of the
    paired bootstrap interval of the GAUC difference is >= -margin. --force promotes regardless."""
    low, diff = result["low"], result["diff"]
    interval = f"95% interval {low:+.4f} .. {result['high']:+.4f}, {result['users']} users"
    text = f"{METRIC} difference {diff:+.4f} ({interval})"
    if low >= -margin:
        return True, f"promoted: {text}; its low end is within the margin -{margin:g}"
    if force:
        return True, f"promoted by --force although {text} falls below the margin -{margin:g}"
    return False, f"not promoted: {text}; its low end is below the margin -{margin:g}: worse than serving"


# --- 6. report, promotion, rollback ----------------------------------------------------------------------------


def write_report(root: Path, report: dict[str, Any]) -> Path:
    """`retrain-reports/<candidate>.json` and `.md` beside the bundles; returns the JSON's path."""
    folder = root / REPORTS
    path = folder / f"{report['candidate']}.json"
    write_json_atomic(path, report)
    result = report["evaluation"]
    lines = [
        f"# Retrain {report['candidate']}",
        "",
        f"**{'Promoted' if report['promoted'] else 'Not promoted'}.** {report['reason']}.",
        "",
        f"| bundle | {METRIC} |",
        "|---|---|",
        f"| serving `{report['serving']}` | {result['serving']:.4f} |",
        f"| candidate `{report['candidate']}` | {result['candidate']:.4f} |",
        "",
        *_liking_lines(result.get("liking")),
        f"Rule: promote when the low end of the 95% paired bootstrap interval over listeners "
        f"({report['n_boot']} draws) of {METRIC}(candidate) - {METRIC}(serving) is >= -{report['margin']:g}.",
        f"Window: {report['window']['events']} events from {report['window']['from']} to {report['window']['to']}, "
        f"{report['window']['rows']} rows with frozen negatives `{report['window']['negatives']}` "
        f"(sha256 {report['window']['sha256'][:16]}).",
        f"Trained on {report['train_events']} events before the window and the bootstrap's "
        f"{report['history']['train']} logged training plays (valid {report['history']['valid']}, test "
        f"{report['history']['test']}); {report['new_tracks']} tracks uploaded since the bootstrap are in the store's "
        "track views.",
        _codebooks_line(report["codebooks"]),
    ]
    write_text_atomic(path.with_suffix(".md"), "\n".join(lines) + "\n")
    return path


def _codebooks_line(books: dict[str, Any]) -> str:
    if not books["refit"]:
        return f"Codebooks: kept (version `{books['version']}`)."
    stored = books.get("stored_retokenized")
    promoted = "" if stored is None else f"; {stored} stored tracks re-tokenized with them at promotion"
    return (f"Codebooks: refit (version `{books['version']}`, replacing `{books['serving_version']}`) on "
            f"{books['fit_tracks']} training tracks; the candidate trained on {books['retokenized']} tracks "
            f"re-tokenized with them{promoted}.")  # fmt: skip


def _liking_lines(liking: dict[str, Any] | None) -> list[str]:
    if liking is None:
        return ["Liking (played or liked against skipped or disliked): no listener in the window has both.", ""]
    return [f"Liking, reported only (played or liked against skipped or disliked, {liking['users']} listeners): "
            f"{METRIC} serving {liking['serving']:.4f}, candidate {liking['candidate']:.4f}, difference "
            f"{liking['diff']:+.4f} (95% interval {liking['low']:+.4f} .. {liking['high']:+.4f}).", ""]  # fmt: skip


def store_content_of(store: Store, bundle: Any) -> int:
    """Make every stored track's content (embedding, tokens, typicality) the bundle's codebooks' before CURRENT
    names it: the tracks whose stored rows name other codebooks are re-tokenized from their pooled layers
    (stored_layers) and written as one new offline part and to the online store. Returns how many; 0, and nothing
    read, when every row is the bundle's already (a retrain that kept the codebooks). Until the services reload,
    the ranker serves the rows of the other codebooks without audio (RankerModel.own_content), never mixed."""
    content = ContentComponent.read(bundle)
    stored = store.read_offline(fn.TRACK_CONTENT)
    foreign = content.foreign(stored["encoder_revision"].to_numpy(dtype=object))
    if not foreign.any():
        return 0
    layers = stored_layers(store, content, stored.loc[foreign, fn.TRACK_ID].astype(str).tolist())
    store.materialize_frames(None, None, content_table(store, content, layers), append=True)
    print(f"[retrain] {int(foreign.sum())} stored tracks re-tokenized with codebooks {content.version}", flush=True)
    return int(foreign.sum())


def promote(root: Path, bundle_id: str, store: Store) -> int:
    """Remember what CURRENT names (for --rollback), store every track's content of the bundle's codebooks (after
    a refit), then point CURRENT at `bundle_id` (services reload on it). Returns how many tracks were re-tokenized."""
    bundle = load_bundle(root / bundle_id)  # never point CURRENT at a bundle the services would refuse
    retokenized = store_content_of(store, bundle)
    write_text_atomic(root / PREVIOUS, current_bundle_path(root).name + "\n")
    set_current(root, bundle_id)
    return retokenized


def rollback(root: Path, store: Store) -> str:
    """Point CURRENT back at the bundle named in PREVIOUS (checked first); PREVIOUS then names the one left, so a
    second rollback undoes the first. Stored tracks are re-tokenized with the restored bundle's codebooks first
    when a refit was promoted in between (store_content_of). Returns the restored id."""
    pointer = root / PREVIOUS
    if not pointer.is_file():
        raise EncoreError(f"nothing to roll back to: {pointer} is missing (no retrain was promoted)")
    previous = pointer.read_text().strip()
    if not BUNDLE_ID.fullmatch(previous):
        raise EncoreError(f"{pointer} holds a bad bundle id {previous[:40]!r}")
    bundle = load_bundle(root / previous)  # a broken bundle raises BundleError, and CURRENT stays
    store_content_of(store, bundle)  # tracks without pooled layers raise EncoreError, and CURRENT stays
    write_text_atomic(pointer, current_bundle_path(root).name + "\n")
    set_current(root, previous)
    return previous


def retrain(args: argparse.Namespace, held: HeldLock | None = None) -> bool:
    """Steps 1 to 6 (module docstring); returns whether the candidate was promoted. `held`: the store's retrain lock,
    checked before CURRENT moves (a job that lost it must not promote over another's work)."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the ranker's initial weights too: the same events give the same candidate
    root, store = boot.artifacts_dir(), Store(EncoreSettings().store())
    serving = load_bundle(current_bundle_path(root))
    store_content_of(store, serving)  # rows of other codebooks (a switch cut short, or raced by an upload): none
    logged = labelled_log(store)  # the bootstrap's history and the events of POST /events
    events = logged[~is_history(logged[fn.EVENT_ID])].reset_index(drop=True)
    before, window = split_window(events, args.holdout_share)
    tracks = store.offline_track_ids()
    interacted = logged[[fn.USER_ID, fn.TRACK_ID]].astype(str)  # every labelled event, the history's included
    splits = History(logged, interacted)
    train_events = with_negatives(before, tracks, interacted, seed=args.seed)
    print(f"[retrain] {len(before)} events to train on, {len(window)} held out; serving {serving.id}", flush=True)
    chosen = candidate_content(args, store, serving, splits, before)
    candidate = train_candidate(args, store, serving, train_events, splits, chosen)
    frame, negatives, digest = frozen_window(window, tracks, interacted, root / REPORTS)
    window_rows = point_in_time(store, frame)  # each bundle scores them with content of its own codebooks
    joined = {"candidate": with_content(window_rows, chosen.tables.track_content, chosen.version),
              "serving": with_content(window_rows, chosen.serving_rows, chosen.previous)}  # fmt: skip
    result = compare(joined, root / candidate, serving.path, args.n_boot)
    promoted, reason = decide(result, args.margin, args.force)
    stamps = window[fn.EVENT_TIMESTAMP]
    report = {"candidate": candidate, "serving": serving.id, "promoted": promoted, "reason": reason,
              "forced": bool(args.force), "metric": METRIC, "margin": args.margin, "n_boot": args.n_boot,
              "evaluation": result, "train_events": int(len(before)), "epochs": args.epochs,
              "new_tracks": len(set(tracks) - track_layers.catalog_ids(store.settings.data_dir)),
              "history": splits.sizes,
              "window": {"events": int(len(window)), "rows": int(len(frame)), "from": str(stamps.min()),
                         "to": str(stamps.max()), "negatives": negatives.name, "sha256": digest},
              "codebooks": chosen.report()}  # fmt: skip
    path = write_report(root, report)
    if promoted:
        if held is not None:
            held.check()
        report["codebooks"]["stored_retokenized"] = promote(root, candidate, store)
        path = write_report(root, report)
    print(f"[retrain] {reason} (report {path})", flush=True)
    return promoted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Retrain from the feature store's events; promote if not worse.")
    parser.add_argument("--epochs", type=int, default=3, help="ranker training epochs (0: an untrained candidate)")
    parser.add_argument("--recall-epochs", type=int, default=30, help="retriever training epochs")
    parser.add_argument("--recall-model", default="BPR", choices=["BPR", "VBPR", "FREEDOM", "LGMRec"])
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help=f"allowed {METRIC} loss (see --help)")
    parser.add_argument("--holdout-share", type=float, default=DEFAULT_HOLDOUT_SHARE, help="newest events held out")
    parser.add_argument("--n-boot", type=int, default=1000, help="paired bootstrap draws over listeners")
    parser.add_argument("--cold-row-share", type=float, default=boot.COLD_ROW_SHARE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--bundle-id", default=None, help="default: retrain-<timestamp>")
    parser.add_argument("--force", action="store_true", help="promote even when worse than serving")
    parser.add_argument("--rollback", action="store_true", help="restore the bundle before the last promotion")
    parser.add_argument(
        "--refit-codebooks",
        action="store_true",
        help="fit new codebooks (a new version) on the training tracks' pooled layers and train with them; every "
        "stored track is re-tokenized before the candidate becomes CURRENT (default: keep the serving codebooks)",
    )
    parser.add_argument(
        "--activity-features",
        action="store_true",
        help="the candidate's ranker reads recent-event features (n_play, ..., skip_rate)",
    )
    parser.add_argument(
        "--affinity-feature",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the candidate's ranker reads content_affinity, the cosine of the listener's content profile (as of the "
        "row) and the track's embedding (default on: docs/events.md 'Does the ranker learn liking from the events?')",
    )
    parser.add_argument(
        "--event-weight",
        type=int,
        default=1,
        help="each logged event's row (play or skip; not its sampled negative) counts this many times per epoch",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.event_weight < 1:  # refused before the store is read, not after the joins
        parser.error(f"--event-weight must be at least 1, got {args.event_weight}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit 0 promoted (or rolled back), 1 not promoted, 2 an error, 3 another retrain holds the lock."""
    args = parse_args(argv)
    root = boot.artifacts_dir()
    try:
        # The flock covers this node's artifacts folder; the store's lock every node sharing the store (a CronJob
        # may start anywhere): encore/job_lock.py.
        with retrain_lock(root), job_lock(Store(EncoreSettings().store()), "retrain") as held:
            if args.rollback:
                print(f"[retrain] CURRENT is {rollback(root, Store(EncoreSettings().store()))} again", flush=True)
                return EXIT_PROMOTED
            return EXIT_PROMOTED if retrain(args, held) else EXIT_NOT_PROMOTED
    except (RetrainLocked, JobLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
