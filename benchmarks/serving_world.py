"""A serving world of any catalog size for the serving benchmarks: bundle (DCNv2 ranker + retriever) and store.

No audio: track content is random (embedding + tokens), so a 1M-track catalog builds in minutes. The ranker is
the bootstrap's DCNv2 (same fields, same hyper-parameters) exported untrained: latency does not depend on the
weights, except through the int8 graph (an untrained model quantizes whole; a trained one keeps the layers that
cost AUC in fp32). So `trained=True` (recommend_profile --trained) writes a second bundle beside it, trained a few
epochs on clicks planted from a taste the features show (`planted_labels`), into `artifacts-trained/`; both
bundles read the same store. The bundle is written with the components' own writers (encore/ranker_bundle.py,
encore/retriever_bundle.py; random BPR-shaped retriever vectors; the ranker's int8 graph checked on the spec rows,
held-out ones when trained, so ENCORE_RANKER_PRECISION=int8 can be measured; a world whose bundle predates int8
graphs gets its bundle rewritten). Feature tables go into the online store of `ENCORE_FEAST_*` (Redis in the
benchmarks) under project `bench_<size>`. A world that is already built and filled is reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.artifacts import BundleBuilder
from encore.io import write_json_atomic
from encore.ranker_bundle import EvalRows, RankerComponent
from encore.retriever_bundle import RetrieverComponent
from encore.schema import FeatureSpec
from encore.store import Store, StoreSettings
from encore.track_snapshot import ensure_track_snapshot, write_track_snapshot
from training.bootstrap import RANKER_HPARAMS, RANKER_MODEL, TOKEN_FIELDS, FeatureTables, ranker_fields, ranker_frame

EMBEDDING_DIM = 64  # about the MFCC backend's vector length
RETRIEVER_DIM = 33  # BPR factors + the folded-in item bias
SPEC_ROWS_MAX = 300_000  # (user, track) rows the feature spec is fit on; the id vocabulary comes from these


@dataclass(frozen=True)
class ServingWorld:
    folder: Path
    n_tracks: int
    n_users: int
    store_settings: StoreSettings
    trained: bool = False

    @property
    def artifacts_dir(self) -> Path:
        return self.folder / ("artifacts-trained" if self.trained else "artifacts")

    @property
    def bundle_id(self) -> str:
        return f"bench-{self.n_tracks}" + ("-trained" if self.trained else "")

    @property
    def bundle_path(self) -> Path:
        return self.artifacts_dir / self.bundle_id

    def user_ids(self) -> list[str]:
        return [f"u{i}" for i in range(self.n_users)]

    def track_ids(self) -> list[str]:
        return [f"t{i}" for i in range(self.n_tracks)]

    def env(self) -> dict[str, str]:
        """ENCORE_* variables that point a service at this world."""
        s = self.store_settings
        return {
            "ENCORE_ARTIFACTS_DIR": str(self.artifacts_dir),
            "ENCORE_FEAST_DATA_DIR": str(s.data_dir),
            "ENCORE_FEAST_PROJECT": s.project,
            "ENCORE_FEAST_ONLINE": s.online,
            "ENCORE_REDIS_URL": s.redis_url,
        }


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def feature_tables(n_tracks: int, n_users: int, seed: int = 0) -> FeatureTables:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            fn.USER_ID: [f"u{i}" for i in range(n_users)],
            "country": rng.choice(["SE", "BR", "US", "DE", "JP", ""], n_users),
            "age": rng.integers(14, 80, n_users),
            "gender": rng.choice(["f", "m", "n", ""], n_users),
            "n_plays": rng.integers(0, 3000, n_users),
            "n_tracks": rng.integers(0, 500, n_users),
        }
    )
    ids = [f"t{i}" for i in range(n_tracks)]
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: ids,
            "artist_id": [f"a{i}" for i in rng.integers(0, max(1, n_tracks // 8), n_tracks)],
            "genre": rng.choice(["rock", "jazz", "pop", "folk", "metal", "soul", "blues", "edm"], n_tracks),
            "key": rng.integers(0, 12, n_tracks),
            "mode": rng.integers(0, 2, n_tracks),
            "language": rng.choice(["en", "pt", "sv", "de", "ja", ""], n_tracks),
            "release_year": rng.integers(1950, 2026, n_tracks),
            "popularity": rng.exponential(1.0, n_tracks).astype(np.float32),
        }
    )
    embedding = rng.standard_normal((n_tracks, EMBEDDING_DIM), dtype=np.float32)
    content = pd.DataFrame(
        {
            fn.TRACK_ID: ids,
            "embedding": list(embedding),
            "tokens": list(rng.integers(0, 32, (n_tracks, TOKEN_FIELDS))),
            "encoder": "mfcc",
            "encoder_revision": "bench",
            "typicality": 0.5,
            "tags": "",
        }
    )
    return FeatureTables(users, meta, content)


def build_world(
    root: Path, n_tracks: int, store_settings: StoreSettings, *, n_users: int = 5000, trained: bool = False
) -> ServingWorld:
    """Build (or reuse) the world of `n_tracks` under `root/<size>`; the store project is bench_<size>. `trained`:
    the world's bundle is the planted-taste trained one (module docstring)."""
    label = size_label(n_tracks)
    world = ServingWorld(root / label, n_tracks, n_users, store_settings, trained)
    marker = world.folder / "world.json"
    store = Store(store_settings)
    started = time.perf_counter()
    if marker.exists() and _filled(store, world):
        ensure_track_snapshot(store)  # a world filled before snapshots existed gets one now
        if not _has_int8_check(world):  # no bundle of this kind yet, or one written before int8 graphs
            _write_bundle(world, feature_tables(n_tracks, n_users))
            print(f"[world {label}] bundle written ({time.perf_counter() - started:.0f} s)", flush=True)
        return world
    tables = feature_tables(n_tracks, n_users)
    if not _has_int8_check(world):
        _write_bundle(world, tables)
        print(f"[world {label}] bundle written ({time.perf_counter() - started:.0f} s)", flush=True)
    store.apply()
    for start in range(0, n_tracks, 100_000):  # chunks bound Feast's memory; `append` keeps one offline snapshot
        chunk = slice(start, start + 100_000)
        meta, content = tables.track_meta.iloc[chunk], tables.track_content.iloc[chunk]
        store.materialize_frames(tables.users if start == 0 else None, meta, content, append=start > 0)
        print(f"[world {label}] store: {min(start + 100_000, n_tracks)}/{n_tracks} tracks", flush=True)
    write_track_snapshot(store)  # the bootstrap's hook: rankers map this instead of reading 13M rows at 1M tracks
    write_json_atomic(marker, {"n_tracks": n_tracks, "n_users": n_users, "project": store_settings.project})
    print(f"[world {label}] ready ({time.perf_counter() - started:.0f} s)", flush=True)
    return world


def _has_int8_check(world: ServingWorld) -> bool:
    """The world's bundle exists and was written with its int8 check (encore/ranker_bundle.py `write_int8`)."""
    manifest = world.bundle_path / "manifest.json"
    if not manifest.exists():
        return False
    return "int8" in json.loads(manifest.read_text()).get("components", {}).get("ranker", {})


def _filled(store: Store, world: ServingWorld) -> bool:
    try:
        last = f"t{world.n_tracks - 1}"
        return bool(store.get_tracks([last])) and bool(store.get_users(["u0"]))
    except Exception:  # noqa: BLE001 - any failure means "fill it again"
        return False


def planted_labels(
    tables: FeatureTables, users: np.ndarray, tracks: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Clicks from a taste the features can show: listeners of one country and gender like two of the eight genres,
    and each country one direction of the content space."""
    genres = sorted(tables.track_meta["genre"].unique())
    genre = pd.Categorical(tables.track_meta["genre"], categories=genres).codes[tracks]
    country = pd.factorize(tables.users["country"], sort=True)[0][users]
    group = country * 4 + pd.factorize(tables.users["gender"], sort=True)[0][users]
    liked = (genre == group % len(genres)) | (genre == (group * 3 + 1) % len(genres))
    direction = np.random.default_rng(7).standard_normal((country.max() + 1, EMBEDDING_DIM)).astype(np.float32)
    embedding = np.stack(tables.track_content["embedding"].to_numpy())[tracks]
    affinity = np.einsum("nd,nd->n", embedding, direction[country]) / np.sqrt(EMBEDDING_DIM)
    logit = 2.5 * liked - 1.5 + affinity
    return (rng.random(len(users)) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def _train(model, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame) -> dict:
    """A few epochs of the bootstrap's ranker training (same optimizer settings) on the planted rows."""
    from training.data import TensorSplit
    from training.trainer import TrainConfig, fit

    cfg = TrainConfig(lr=1e-3, batch_size=2048, epochs=4, embedding_l2=1e-5, seed=1, progress=False)
    result = fit(model, TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid), cfg)
    return {"best_epoch": result.best_epoch, "valid_auc": round(float(result.best_valid["auc"]), 4)}


def _write_bundle(world: ServingWorld, tables: FeatureTables) -> None:
    import torch

    from training.export import export_onnx
    from training.models.registry import get_ctr_model

    rng = np.random.default_rng(1)
    n_rows = min(SPEC_ROWS_MAX, (30 if world.trained else 2) * world.n_tracks)
    users = rng.integers(0, world.n_users, n_rows)
    tracks = rng.integers(0, world.n_tracks, n_rows)
    rows = pd.DataFrame(
        {
            fn.USER_ID: [f"u{i}" for i in users],
            fn.TRACK_ID: [f"t{i}" for i in tracks],
            "label": planted_labels(tables, users, tracks, rng) if world.trained else rng.integers(0, 2, n_rows),
        }
    )
    fields = ranker_fields(TOKEN_FIELDS, EMBEDDING_DIM)
    frame = ranker_frame(rows, tables, fields)
    spec = FeatureSpec.fit(frame, fields)
    torch.manual_seed(0)
    model = get_ctr_model(RANKER_MODEL)(spec, **RANKER_HPARAMS)
    if world.trained:
        held_out = frame.sample(frac=0.2, random_state=0)
        metrics = _train(model, spec, frame.drop(held_out.index), held_out)
        print(f"[world {size_label(world.n_tracks)}] trained ranker: {metrics}", flush=True)
        frame = held_out
    # The int8 graph is checked on these rows (untrained: random labels, so only the AUC change means anything;
    # trained: the held-out planted rows), as a bootstrap bundle's is on its test split.
    checked_on = EvalRows("spec_rows", spec.encode_packed(frame), spec.labels(frame))

    n_seen = 20
    seen = np.sort(rng.integers(0, world.n_tracks, (world.n_users, n_seen)), axis=1)
    recall = RetrieverComponent(
        model="BPR",
        user_ids=np.array(world.user_ids()),
        user_vectors=rng.standard_normal((world.n_users, RETRIEVER_DIM), dtype=np.float32),
        item_ids=np.array(world.track_ids()),
        item_vectors=rng.standard_normal((world.n_tracks, RETRIEVER_DIM), dtype=np.float32),
        seen_indptr=np.arange(0, world.n_users * n_seen + 1, n_seen, dtype=np.int64),
        seen_indices=seen.reshape(-1).astype(np.int32),
        popularity=rng.integers(0, 1000, world.n_tracks).astype(np.int64),
        projection=None,
    )
    popular = tables.track_meta.sort_values("popularity", ascending=False)[fn.TRACK_ID].head(5000).tolist()
    with BundleBuilder(world.artifacts_dir, world.bundle_id) as bundle:
        ranker = RankerComponent(RANKER_MODEL, spec, popular, hparams=RANKER_HPARAMS)
        ranker.write(bundle, lambda path: export_onnx(model, path), checked_on)
        recall.write(bundle)
        bundle.manifest["dataset"] = {"name": "bench", "n_tracks": world.n_tracks, "n_users": world.n_users}
    (world.folder / "spec_rows.json").write_text(json.dumps({"rows": n_rows}))
