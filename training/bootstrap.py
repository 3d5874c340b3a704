"""One-shot demo bootstrap: synthetic world -> audio features -> DCNv2 ranker + BPR retriever -> bundle -> store.

    .venv/bin/python -m training.bootstrap [--size small] [--encoder musicnn|mfcc] [--epochs 3] [--force]

Writes `artifacts/<bundle-id>/` (ENCORE_ARTIFACTS_DIR) and makes it CURRENT, then applies the Feast repo
and writes user profiles, track metadata and track content into the online store (ENCORE_FEAST_*).
A later run with the same settings finds the bundle and the store filled and returns in seconds; when the
online store was emptied (Redis keeps nothing on disk) it is refilled from the saved feature tables.

The store also gets what a retrain (training/retrain.py) trains on besides the logged events, so it never needs
the world: the protocol splits' plays as the bootstrap's history in the offline event log (`history`,
`EventLog.write_history`) and the catalog's pooled layers (encore/track_layers.py, for a codebook refit).

Training and serving read the same values: the ranker's frames are built from exactly the feature tables
that go into the store, and the dense vectors and tokens come from the bundle's codebooks
(`Codebooks.embedding` / `tokenize`), the same calls the embedder makes for uploads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore import track_layers
from encore.artifacts import BundleBuilder, BundleError, current_bundle_path, load_bundle
from encore.audio import Codebooks, extract_catalog, get_encoder, load_catalog
from encore.audio.codebooks import CodebookMismatch
from encore.audio.content import ContentComponent
from encore.audio.encoder import DEFAULT_ENCODER, ENCODERS, AudioEncoder
from encore.audio.extract import load_catalog_tags
from encore.cold_calibration import ColdCalibration
from encore.errors import EncoreError
from encore.events import HISTORY_PART, HISTORY_PREFIX, EventLog
from encore.io import write_json_atomic, write_parquet_atomic
from encore.ranker_bundle import RankerComponent
from encore.ranker_frame import AUDIO_EMBEDDING, audio_token, training_frame
from encore.schema import FeatureSpec, FieldConfig
from encore.settings import EncoreSettings

KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
DENSE_LAYER = "last"
# About this many token fields: every pooled layer gets ceil(TOKEN_FIELDS / layers) blocks, one codebook each
# (MFCC's one layer: 8 blocks; MusiCNN's five layers, 561/64/64/64/200 wide: 2 each, 10 fields).
TOKEN_FIELDS = 8
RANKER_MODEL = "DCNv2"
# Share of training rows shown to the ranker as an upload looks to it: no track id (OOV), the store's unknown
# metadata, popularity 0; only the audio is left (DropoutNet-style cold simulation). Without it the model never
# saw such a row, and scored uploads by extrapolating: a few took everyone's top-10, most reached nobody's.
COLD_ROW_SHARE = 0.2
REFERENCE_USERS = 64  # the panel a cold track's score for a listener is compared against (encore/cold_calibration)
# Small on purpose: the ranker scores 200 candidates per request (0.7 ms here vs 6-7 ms at BARS size).
RANKER_HPARAMS = {"embedding_dim": 16, "num_cross_layers": 2, "hidden_units": [128, 64], "dropout": 0.1}


def artifacts_dir() -> Path:
    return EncoreSettings().artifacts_dir


@dataclass
class FeatureTables:
    """What goes into the store, keyed by string ids; the ranker's training frames are joined from these."""

    users: pd.DataFrame  # user_id + USER_PROFILE_FIELDS
    track_meta: pd.DataFrame  # track_id + TRACK_META_FIELDS
    track_content: pd.DataFrame  # track_id + embedding, tokens, encoder, encoder_revision

    def save(self, folder: Path) -> None:
        for name in ("users", "track_meta", "track_content"):
            write_parquet_atomic(folder / f"{name}.parquet", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> FeatureTables:
        return cls(*(pd.read_parquet(folder / f"{n}.parquet") for n in ("users", "track_meta", "track_content")))


def user_profiles(users: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Profile + activity stats computed on the training rows only."""
    plays = train.groupby(fn.USER_ID).agg(n_plays=("num_repeat", "sum"), n_tracks=(fn.TRACK_ID, "nunique"))
    out = users.set_index(fn.USER_ID)[["country", "age", "gender"]].join(plays).fillna(0).reset_index()
    out[fn.USER_ID] = out[fn.USER_ID].astype(str)
    return out.astype({"age": "int64", "n_plays": "int64", "n_tracks": "int64"})[[fn.USER_ID, *fn.USER_PROFILE_FIELDS]]


def track_metadata(tracks: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Catalog metadata in the store's types; popularity = log1p(training plays)."""
    counts = train.groupby(fn.TRACK_ID).size()
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: tracks[fn.TRACK_ID].astype(str),
            "artist_id": tracks["artist_id"].astype(str),
            "genre": tracks["genre"].astype(str),
            "key": tracks["key"].map(KEYS.index).astype("int64"),
            "mode": (tracks["mode"] == "major").astype("int64"),
            "language": tracks["language"].astype(str),
            "release_year": tracks["release_year"].astype("int64"),
            "popularity": np.log1p(tracks[fn.TRACK_ID].map(counts).fillna(0).to_numpy()).astype("float32"),
        }
    )
    return meta[[fn.TRACK_ID, *fn.TRACK_META_FIELDS]]


def track_content(
    ids: list[str], layers: np.ndarray, content: ContentComponent, revision: str, tags: dict[str, str]
) -> pd.DataFrame:
    """The store's track_content rows: the same `ContentComponent.features` (and tag heads) the embedder runs on
    an upload."""
    features = content.features(layers)
    return pd.DataFrame(
        {
            fn.TRACK_ID: ids,
            "embedding": list(features.embedding),
            "tokens": list(features.tokens),
            "encoder": content.encoder,
            "encoder_revision": revision,
            "typicality": features.typicality,
            "tags": [tags.get(t, "") for t in ids],
        }
    )


HISTORY_SPLITS = ("train", "valid", "test")


def history(plays: pd.DataFrame, splits: Any) -> pd.DataFrame:
    """The protocol splits' observed rows as events of the offline log (docs/events.md "Retraining"): id
    `_history:<split>:<n>`, the play's own time, type "play" for a positive (num_repeat >= the threshold) and "skip"
    for a play heard once, ms not given, so that `encore.events.label` gives each its protocol label."""
    first = plays.drop_duplicates([fn.USER_ID, fn.TRACK_ID])[[fn.USER_ID, fn.TRACK_ID, "timestamp"]]  # as the protocol
    parts = {"train": splits.train_positives, **{name: splits.evals[name] for name in HISTORY_SPLITS[1:]}}
    frames = []
    for name, rows in parts.items():  # an eval set's negatives were never played: the join drops them
        observed = rows[[fn.USER_ID, fn.TRACK_ID, "label"]].merge(first, on=[fn.USER_ID, fn.TRACK_ID])
        frames.append(observed.assign(split=name))
    rows = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            fn.EVENT_ID: HISTORY_PREFIX + rows["split"] + ":" + pd.Series(np.arange(len(rows))).astype(str),
            fn.USER_ID: rows[fn.USER_ID].astype(str),
            fn.TRACK_ID: rows[fn.TRACK_ID].astype(str),
            "type": np.where(rows["label"].to_numpy() == 1, "play", "skip"),
            "ms": np.full(len(rows), -1, np.int64),
            fn.EVENT_TIMESTAMP: pd.to_datetime(rows["timestamp"].to_numpy(np.int64), unit="s", utc=True),
        }
    )


def ranker_fields(n_tokens: int, emb_dim: int) -> list[FieldConfig]:
    """id + categorical + numeric + content (dense and tokens): columns named as the store's fields."""
    cat = [("country", "user"), ("gender", "user"), ("artist_id", "item"), ("genre", "item"), ("key", "item"),
           ("mode", "item"), ("language", "item")]  # fmt: skip
    num = [("age", "user"), ("n_plays", "user"), ("release_year", "item"), ("popularity", "item")]
    return [
        FieldConfig(fn.USER_ID, "id", owner="user"),
        FieldConfig(fn.TRACK_ID, "id", owner="item"),
        *[FieldConfig(name, "categorical", owner=owner) for name, owner in cat],
        *[FieldConfig(name, "numeric", owner=owner, numeric_mode="quantile", n_buckets=10) for name, owner in num],
        FieldConfig(AUDIO_EMBEDDING, "dense", owner="item", dim=emb_dim),
        *[FieldConfig(audio_token(i), "categorical", owner="item") for i in range(n_tokens)],
    ]


def ranker_frame(rows: pd.DataFrame, tables: FeatureTables, fields: list[FieldConfig]) -> pd.DataFrame:
    """(user_id, track_id, label) rows joined with the store's feature tables: the ranker's own frame builder
    (encore/ranker_frame.py), so what training sees is what serving builds from the store."""
    return training_frame(rows, tables.users, tables.track_meta, tables.track_content, fields)


def as_cold(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """`frame` with a random `share` of its rows (all of them at share 1) shown as an upload's: no id, no meta."""
    cold = np.random.default_rng(seed).random(len(frame)) < share
    frame = frame.copy()
    frame[fn.TRACK_ID] = frame[fn.TRACK_ID].astype(object).where(~cold, None)
    for name, unknown in fn.NEW_TRACK_META.items():
        frame.loc[cold, name] = unknown
    return frame


class WorldContent(NamedTuple):
    """The synthetic world and its catalog's content, as the encoder heard it."""

    world: Any  # training.datasets.synthetic.World (imported lazily: it pulls in the dataset code)
    encoder: AudioEncoder
    ids: list[str]  # catalog track ids, in the order of `layers`
    layers: np.ndarray  # (n_tracks, L, D) pooled encoder layers
    catalog_tags: dict  # track id -> the encoder's top tags


def world_content(args: argparse.Namespace) -> WorldContent:
    """Load (or generate) the world, then extract its catalog's content with the chosen encoder (resumable)."""
    from training.datasets.synthetic import load_world, world_params

    world = load_world(world_params(args.size), progress=not args.quiet)
    print(f"[bootstrap] world {world.folder.name}: {len(world.users)} users, {len(world.tracks)} tracks", flush=True)

    encoder = get_encoder(args.encoder, args.weights_dir)
    print(f"[bootstrap] encoder {encoder.name} ({encoder.revision})", flush=True)
    catalog_dir = world.folder / f"content-{encoder.name}"
    extract_catalog(world.audio_paths(), encoder, catalog_dir, progress=not args.quiet, tags=True)
    ids, layers, _ = load_catalog(catalog_dir)
    catalog_tags = load_catalog_tags(catalog_dir)
    return WorldContent(world, encoder, [str(i) for i in ids], layers, catalog_tags)


def build(args: argparse.Namespace) -> str:
    """Everything from the world to a CURRENT bundle; returns the bundle id. The steps: the world and its content,
    the protocol split, codebooks fit on the training catalog, then the content, ranker and retriever components
    written into one bundle, and the feature tables saved for the store."""
    import torch

    from training.datasets.protocol import ProtocolConfig, apply_protocol

    started = time.time()
    torch.set_num_threads(args.threads)
    world, encoder, ids, layers, catalog_tags = world_content(args)

    splits = apply_protocol(world.plays, ProtocolConfig(), out_dir=None)
    train_rows = splits.train_positives
    train_items = set(np.asarray(splits.train_items).astype(str))
    train_idx = np.array([i for i, t in enumerate(ids) if t in train_items])
    groups = math.ceil(TOKEN_FIELDS / encoder.layout.n_layers)
    books = Codebooks.fit(layers[train_idx], encoder_info=encoder.describe(), k=32, groups=groups, seed=0)

    bundle_id = args.bundle_id or f"demo-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}"
    with BundleBuilder(artifacts_dir(), bundle_id) as bundle:
        content = ContentComponent(books, encoder.name, DENSE_LAYER, standardize=True, catalog_tags=True).write(bundle)
        revision = content.revision(encoder.revision)
        tables = FeatureTables(
            user_profiles(world.users, train_rows),
            track_metadata(world.tracks, train_rows),
            track_content(ids, layers, content, revision, catalog_tags),
        )
        without_content = set(world.tracks[fn.TRACK_ID].astype(str)) - set(ids)
        if without_content:
            raise EncoreError(f"{len(without_content)} catalog tracks have no content")
        # Ranker: DCNv2 on id + categorical + numeric + audio (dense and tokens), fresh negatives each epoch.
        fields = ranker_fields(books.n_fields, content.dense_width)
        train_frame = as_cold(
            ranker_frame(splits.sampler(1, args.seed), tables, fields), args.cold_row_share, args.seed
        )
        ranker_metrics = train_ranker(args, splits, tables, fields, train_frame, bundle)
        train_retriever(args, train_rows, ids, tables, {"encoder": encoder.name, "encoder_revision": revision}, bundle)
        bundle.manifest["dataset"] = {"name": "synthetic", "size": args.size, "world": world.folder.name}
    tables.save(tables_dir(bundle_id))
    # What fill_store logs into the store for a retrain: the history, and the catalog's layers (for a refit).
    write_parquet_atomic(tables_dir(bundle_id) / HISTORY_FILE, history(world.plays, splits))
    track_layers.write_many(tables_dir(bundle_id), ids, layers, encoder.name, encoder.revision, CATALOG_LAYERS)
    auc, cold_auc = ranker_metrics["test"]["auc"], ranker_metrics["test_as_cold"]["auc"]
    print(f"[bootstrap] bundle {bundle_id}: ranker test AUC {auc:.4f}, as cold tracks {cold_auc:.4f} "
          f"({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    return bundle_id


def train_ranker(
    args: argparse.Namespace,
    splits: Any,
    tables: FeatureTables,
    fields: list[FieldConfig],
    train_frame: pd.DataFrame,
    bundle: BundleBuilder,
    extra_frame: pd.DataFrame | None = None,
) -> dict:
    """Train the ranker from its first epoch's frame (the feature spec is fit on it; fresh negatives each later
    epoch, a share shown as uploads), calibrate its cold scores, and write its component into `bundle`; returns its
    metrics (also in the component). `extra_frame` (the retrain's events, joined as of each event) is added to
    every epoch's rows as it is."""
    from training.data import TensorSplit
    from training.export import export_onnx
    from training.models.registry import get_ctr_model
    from training.trainer import TrainConfig, evaluate, fit, predict

    if extra_frame is not None:
        train_frame = pd.concat([train_frame, as_cold(extra_frame, args.cold_row_share, args.seed)], ignore_index=True)
    spec = FeatureSpec.fit(train_frame, fields)
    model = get_ctr_model(RANKER_MODEL)(spec, **RANKER_HPARAMS)
    valid = TensorSplit.from_frame("valid", spec, ranker_frame(splits.evals["valid"], tables, fields), fn.USER_ID)

    def resample(epoch: int) -> TensorSplit:
        frame = pd.concat([ranker_frame(splits.sampler(epoch, args.seed), tables, fields), extra_frame])
        frame = as_cold(frame.reset_index(drop=True), args.cold_row_share, args.seed * 1000 + epoch)
        return TensorSplit.from_frame("train", spec, frame)

    cfg = TrainConfig(lr=1e-3, batch_size=2048, epochs=args.epochs, embedding_l2=1e-5, seed=args.seed,
                      progress=not args.quiet)  # fmt: skip
    result = fit(model, TensorSplit.from_frame("train", spec, train_frame), valid, cfg, resample=resample)
    valid_frame = ranker_frame(splits.evals["valid"], tables, fields)
    valid_as_cold = TensorSplit.from_frame("valid", spec, as_cold(valid_frame, 1.0, 0), fn.USER_ID)
    panel = tables.users.sample(min(REFERENCE_USERS, len(tables.users)), random_state=args.seed)
    calibration = ColdCalibration.fit(predict(model, valid), predict(model, valid_as_cold), panel.to_dict("records"))
    test_frame = ranker_frame(splits.evals["test"], tables, fields)
    test = TensorSplit.from_frame("test", spec, test_frame, fn.USER_ID)
    # The same test rows with every track shown as an upload: how well the audio alone ranks for a user.
    test_as_cold = TensorSplit.from_frame("test", spec, as_cold(test_frame, 1.0, 0), fn.USER_ID)
    ranker_metrics = {"valid": result.best_valid, "test": evaluate(model, test),
                      "test_as_cold": evaluate(model, test_as_cold), "best_epoch": result.best_epoch,
                      "cold_row_share": args.cold_row_share}  # fmt: skip
    popular = splits.train_positives[fn.TRACK_ID].astype(str).value_counts().index.tolist()
    ranker = RankerComponent(RANKER_MODEL, spec, popular, calibration, RANKER_HPARAMS, ranker_metrics)
    ranker.write(bundle, lambda path: export_onnx(model, path), test.eval_rows())  # int8 checked on the test rows
    return ranker_metrics


def train_retriever(
    args: argparse.Namespace,
    train_rows: pd.DataFrame,
    ids: list[str],
    tables: FeatureTables,
    encoder: dict[str, str],
    bundle: BundleBuilder,
) -> None:
    """The retriever (BPR unless --recall-model) on every training play, with the content-to-item map for tracks
    uploaded later, written into `bundle`."""
    from training.train_recall import train_recall

    content_matrix = np.stack(tables.track_content["embedding"].to_numpy())
    recall = train_recall(
        train_rows[[fn.USER_ID, fn.TRACK_ID]].astype(str),
        (ids, content_matrix),
        encoder=encoder,
        model=args.recall_model,
        epochs=args.recall_epochs,
        seed=args.seed,
        test_fraction=0.0,
        cold_item_fraction=0.0,
    )
    recall.component().write(bundle)


HISTORY_FILE = "history.parquet"  # in tables_dir: the history fill_store logs (EventLog.write_history)
CATALOG_LAYERS = track_layers.CATALOG_PART  # the catalog's pooled layers, in tables_dir and in the store


def tables_dir(bundle_id: str) -> Path:
    """The feature tables a bundle was trained with, kept beside the worlds (ENCORE_CACHE_DIR)."""
    return EncoreSettings().cache_dir / "bootstrap" / bundle_id


def fill_store(bundle_id: str) -> None:
    """Apply the Feast repo and write the bundle's feature tables into the online store."""
    from encore.store import Store
    from encore.track_snapshot import write_track_snapshot
    from services.ranker.inputs_ahead import encode_ahead

    store = Store(EncoreSettings().store())
    tables = FeatureTables.load(tables_dir(bundle_id))
    store.apply()
    store.materialize_frames(tables.users, tables.track_meta, tables.track_content)
    log_history(store, bundle_id)
    # The ranker maps this persisted track table instead of reading every track (encore/track_snapshot.py),
    # and the item inputs encoded from it now (a minute at 1M tracks) instead of at its first start.
    write_track_snapshot(store)
    try:
        encode_ahead(store, artifacts_dir() / bundle_id)
    except (EncoreError, OSError, ValueError) as error:  # the ranker then encodes them at its start
        print(f"[bootstrap] item inputs not encoded ahead: {error}", flush=True)
    write_json_atomic(tables_dir(bundle_id) / "store.json", {"project": store.settings.project})


def log_history(store: Any, bundle_id: str) -> None:
    """The bootstrap's history into the offline event log (replacing an earlier bootstrap's) and the catalog's
    pooled layers beside the store's track views: what a retrain reads instead of the world."""
    log = EventLog(store)
    try:
        log.write_history(pd.read_parquet(tables_dir(bundle_id) / HISTORY_FILE))
    finally:
        log.close()
    kept = track_layers.read(tables_dir(bundle_id))
    track_layers.write_many(store.settings.data_dir, kept[fn.TRACK_ID].tolist(), np.stack(kept["layers"].to_numpy()),
                            str(kept["encoder"].iloc[0]), str(kept["revision"].iloc[0]), CATALOG_LAYERS)  # fmt: skip


def store_is_filled(bundle_id: str) -> bool:
    """The online store answers for a track of this bundle (Redis may have been restarted empty)."""
    from encore.store import Store

    folder = tables_dir(bundle_id)
    if not (folder / "store.json").exists():
        return False
    track = str(pd.read_parquet(folder / "track_meta.parquet", columns=[fn.TRACK_ID]).iloc[0, 0])
    try:
        store = Store(EncoreSettings().store())
        logged = (store.settings.offline_dir / fn.EVENTS / HISTORY_PART).is_file()  # filled before it was logged
        layers = (track_layers.folder_of(store.settings.data_dir) / CATALOG_LAYERS).is_file()
        return logged and layers and bool(store.get_tracks([track]))
    except Exception:  # noqa: BLE001 - any store failure means "fill it again"
        return False


def existing_bundle(size: str, encoder_info: dict) -> str | None:
    """The CURRENT bundle when it verifies, has this content format and encoder, was built for this size, and has
    its feature tables and catalog tags saved; anything else is rebuilt, never reused."""
    try:
        bundle = load_bundle(current_bundle_path(artifacts_dir()))
        content = ContentComponent.read(bundle)  # an older content format is refused
        content.codebooks.check_encoder(encoder_info)  # another encoder, or the same with other settings
    except (BundleError, ValueError, OSError, CodebookMismatch):
        return None
    if bundle.manifest.get("dataset", {}).get("size") != size:
        return None
    if not content.catalog_tags:  # built before the catalog carried tags
        return None
    folder = tables_dir(bundle.id)  # a bundle built before its history and catalog layers were kept is rebuilt
    saved = (folder / "users.parquet", folder / HISTORY_FILE, track_layers.folder_of(folder) / CATALOG_LAYERS)
    return bundle.id if all(path.exists() for path in saved) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo bundle and fill the feature store.")
    parser.add_argument("--size", default="small", help="synthetic world size: quick, small, default, large")
    parser.add_argument(
        "--encoder",
        default=EncoreSettings().encoder,
        choices=sorted(ENCODERS),
        help=f"audio encoder of the catalog and the bundle (ENCORE_ENCODER; default {DEFAULT_ENCODER})",
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=EncoreSettings().weights_dir,
        help="local weight folders (ENCORE_WEIGHTS_DIR)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="ranker training epochs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--bundle-id", default=None, help="default: demo-<size>-<timestamp>")
    parser.add_argument(
        "--recall-model", default="BPR", choices=["BPR", "VBPR", "FREEDOM", "LGMRec"], help="the retriever's model"
    )
    parser.add_argument("--recall-epochs", type=int, default=30, help="retriever training epochs")
    parser.add_argument(
        "--cold-row-share", type=float, default=COLD_ROW_SHARE, help="training rows shown as uploads (0 to 1)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching bundle exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        bundle_id = (
            None if args.force else existing_bundle(args.size, get_encoder(args.encoder, args.weights_dir).describe())
        )
        if bundle_id is None:
            bundle_id = build(args)
        else:
            print(f"[bootstrap] using existing bundle {bundle_id}", flush=True)
        if args.force or not store_is_filled(bundle_id):
            fill_store(bundle_id)
            print("[bootstrap] feature store filled", flush=True)
        users = pd.read_parquet(tables_dir(bundle_id) / "users.parquet", columns=[fn.USER_ID])
        print(json.dumps({"bundle_id": bundle_id, "example_user": str(users.iloc[0, 0])}), flush=True)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
