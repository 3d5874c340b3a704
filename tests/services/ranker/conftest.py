"""Ranker fixtures: a tiny real bundle (DCNv2 trained and exported here), a real SQLite store, and a real
HTTP server standing in for the retriever (the one external service the ranker calls)."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import torch

from encore import feature_names as fn
from encore.artifacts import BundleBuilder
from encore.ranker_bundle import RankerComponent
from encore.schema import FeatureSpec, FieldConfig
from encore.store import Store, StoreSettings
from tests.conftest import free_port
from training.bootstrap import FeatureTables, ranker_frame
from training.data import TensorSplit
from training.export import export_onnx
from training.models.ctr.dcnv2 import DCNv2
from training.trainer import TrainConfig, fit

EMBEDDING_DIM = 8
N_LAYERS = 4
N_USERS, N_TRACKS, N_TRAIN_TRACKS = 40, 80, 70  # tracks t70..t79 have features but no training rows
BUNDLE_ID = "ranker-test-001"
CONTENT_ONLY = "t_content_only"  # in track_content but not in track_meta (an upload without meta)
NOT_IN_STORE = "t_not_in_store"

SPEC_FIELDS = [
    FieldConfig("user_id", "id", owner="user"),
    FieldConfig("country", "categorical", owner="user"),
    FieldConfig("age", "numeric", owner="user", numeric_mode="quantile", n_buckets=4),
    FieldConfig("gender", "categorical", owner="user"),
    FieldConfig("n_plays", "numeric", owner="user", numeric_mode="log", n_buckets=4),
    FieldConfig("track_id", "id", owner="item"),
    FieldConfig("artist_id", "categorical", owner="item"),
    FieldConfig("genre", "categorical", owner="item"),
    FieldConfig("key", "categorical", owner="item"),
    FieldConfig("release_year", "numeric", owner="item", numeric_mode="equal_width", n_buckets=5),
    FieldConfig("popularity", "numeric", owner="item", numeric_mode="scale"),
    FieldConfig("audio_emb", "dense", owner="item", dim=EMBEDDING_DIM),
    FieldConfig("audio_tok_0", "categorical", owner="item"),
    FieldConfig("audio_tok_1", "categorical", owner="item"),
    FieldConfig("audio_missing", "categorical", owner="item"),
]


@dataclass(frozen=True)
class SourceFrames:
    """The store's view frames (what Feast holds) and the interactions training learns from."""

    users: pd.DataFrame
    meta: pd.DataFrame
    content: pd.DataFrame
    interactions: pd.DataFrame  # user_id, track_id, label

    @property
    def tables(self) -> FeatureTables:
        """The frames as the bootstrap holds them (what it writes into the store and joins training rows from)."""
        return FeatureTables(self.users, self.meta, self.content)


def make_source_frames(seed: int = 3) -> SourceFrames:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            fn.USER_ID: [f"u{i}" for i in range(N_USERS)],
            "country": rng.choice(["SE", "BR", "US", ""], N_USERS),
            "age": rng.integers(16, 70, N_USERS),
            "gender": rng.choice(["f", "m", ""], N_USERS),
            "n_plays": rng.integers(1, 500, N_USERS),
            "n_tracks": rng.integers(1, 100, N_USERS),
        }
    )
    track_ids = [f"t{i}" for i in range(N_TRACKS)]
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: track_ids,
            "artist_id": [f"a{i % 20}" for i in range(N_TRACKS)],
            "genre": rng.choice(["rock", "jazz", "pop", "folk"], N_TRACKS),
            "key": rng.integers(-1, 12, N_TRACKS),
            "mode": rng.integers(0, 2, N_TRACKS),
            "language": rng.choice(["en", "pt", "sv", ""], N_TRACKS),
            "release_year": rng.integers(1960, 2025, N_TRACKS),
            "popularity": rng.random(N_TRACKS).astype(np.float32),
        }
    )
    content_ids = [*track_ids, CONTENT_ONLY]
    content = pd.DataFrame(
        {
            fn.TRACK_ID: content_ids,
            "embedding": list(rng.standard_normal((len(content_ids), EMBEDDING_DIM)).astype(np.float32)),
            "tokens": list(rng.integers(0, 32, (len(content_ids), N_LAYERS))),
            "encoder": "mfcc",
            "encoder_revision": "mfcc-test",
            "typicality": 0.5,
            "tags": [""] * len(track_ids) + ["mtt:strings,mtt:classical,mtt:violin,mtt:slow,msd:classical"],
        }
    )
    n = 3000
    pairs = pd.DataFrame(
        {
            fn.USER_ID: rng.choice(users[fn.USER_ID], n),
            fn.TRACK_ID: rng.choice(track_ids[:N_TRAIN_TRACKS], n),
        }
    )
    frame = ranker_frame(pairs, FeatureTables(users, meta, content), SPEC_FIELDS)
    emb = np.stack(frame["audio_emb"].to_numpy())
    logit = 1.5 * (frame["genre"] == "jazz") + 1.2 * emb[:, 0] - 0.8 * (frame["country"] == "BR")
    pairs["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(int)
    return SourceFrames(users, meta, content, pairs)


@dataclass
class TrainedBundle:
    artifacts_dir: Path
    bundle_id: str
    spec: FeatureSpec
    frames: SourceFrames
    onnx_path: Path
    train_frame: pd.DataFrame  # the frame the model was fit on, as the bootstrap built it

    def frame_for(self, user_id: str, track_ids: list[str]) -> pd.DataFrame:
        """The bootstrap's frame of (user_id, track) rows (training/bootstrap.py `ranker_frame`)."""
        pairs = pd.DataFrame({fn.USER_ID: user_id, fn.TRACK_ID: track_ids})
        return ranker_frame(pairs, self.frames.tables, SPEC_FIELDS)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainedBundle:
    """DCNv2 trained for two epochs on the bootstrap's frames of the generated rows, exported to ONNX and written
    as a bundle by the ranker component's writer."""
    frames = make_source_frames()
    rows = ranker_frame(frames.interactions, frames.tables, SPEC_FIELDS)
    train, valid = rows.iloc[:2400], rows.iloc[2400:]
    spec = FeatureSpec.fit(train, SPEC_FIELDS)
    torch.manual_seed(0)
    model = DCNv2(spec, embedding_dim=4, num_cross_layers=2, hidden_units=(16,))
    result = fit(
        model,
        TensorSplit.from_frame("train", spec, train),
        TensorSplit.from_frame("valid", spec, valid),
        TrainConfig(lr=5e-3, batch_size=256, epochs=2, progress=False),
    )
    artifacts = tmp_path_factory.mktemp("artifacts")
    popularity = frames.meta.sort_values("popularity", ascending=False)[fn.TRACK_ID].tolist()
    checked_on = TensorSplit.from_frame("valid", spec, valid).eval_rows()  # the int8 graph's accuracy check
    with BundleBuilder(artifacts, BUNDLE_ID) as builder:
        component = RankerComponent("DCNv2", spec, popularity, metrics=result.best_valid)
        component.write(builder, lambda path: export_onnx(model, path), checked_on)
    return TrainedBundle(artifacts, BUNDLE_ID, spec, frames, artifacts / BUNDLE_ID / RankerComponent.ONNX, train)


def copy_bundle(
    source: Path, root: Path, bundle_id: str, corrupt_onnx: bool = False, without_int8: bool = False
) -> Path:
    """A new bundle with the same files (and valid checksums); `corrupt_onnx` writes garbage as the model,
    `without_int8` leaves the int8 graph out (as a bundle written before int8 graphs were)."""
    skip = {"manifest.json", *([Path(RankerComponent.ONNX_INT8).name] if without_int8 else [])}
    with BundleBuilder(root, bundle_id, make_current=False) as builder:
        for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name not in skip):
            target = builder.path / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        if corrupt_onnx:
            (builder.path / RankerComponent.ONNX).write_bytes(b"not an onnx graph")
        manifest = json.loads((source / "manifest.json").read_text())
        builder.manifest.update({k: manifest[k] for k in ("feature_spec_hash", "components")})
        if without_int8:
            ranker = builder.manifest["components"]["ranker"]
            ranker.pop("onnx_int8", None)
            ranker.pop("int8", None)
    return root / bundle_id


@pytest.fixture(scope="session")
def store_settings(trained_bundle: TrainedBundle, tmp_path_factory: pytest.TempPathFactory) -> StoreSettings:
    """A real SQLite store holding the generated users, track meta and content (no redis needed)."""
    settings = StoreSettings(tmp_path_factory.mktemp("feast"), f"ranker_test_{uuid.uuid4().hex[:10]}", "sqlite")
    store = Store(settings)
    store.apply()
    frames = trained_bundle.frames
    store.materialize_frames(frames.users, frames.meta, frames.content)
    return settings


@pytest.fixture(scope="session")
def store(store_settings: StoreSettings) -> Store:
    return Store(store_settings)


# --- the retriever, as a real HTTP server -------------------------------------------------------------


@dataclass
class FakeRetriever:
    """Answers GET /candidates like the retriever does, with whatever `candidates` holds."""

    url: str = ""
    candidates: list[dict] = field(default_factory=list)
    status: int = 200
    requests: list[dict] = field(default_factory=list)

    def answer(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        user_id, k = query["user_id"][0], int(query["k"][0])
        self.requests.append({"user_id": user_id, "k": k})
        body = {
            "user_id": user_id,
            "known_user": True,
            "source": "bpr",
            "bundle_id": "retriever-test",
            "candidates": self.candidates[:k],
        }
        return self.status, body

    def catalog(self, path: str) -> tuple[int, dict]:
        """The listening room's read routes (services/retriever/catalog.py), over the same candidates."""
        ids = [str(c["track_id"]) for c in self.candidates]
        parts = path.strip("/").split("/")
        if parts == ["users"]:
            return 200, {"bundle_id": "retriever-test", "users": ["u1", "u2"], "n_users": 2}
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "history":
            return 200, {"user_id": parts[1], "known_user": True, "track_ids": ids[:3]}
        if len(parts) == 3 and parts[0] == "items" and parts[2] == "similar" and parts[1] in ids:
            similar = [{"track_id": t, "score": 0.5} for t in ids[:5]]
            return 200, {"track_id": parts[1], "cold": False, "similar": similar}
        return 404, {"detail": {"code": "not_found", "message": f"nothing at {path}"}}


@pytest.fixture(scope="session")
def retriever() -> Iterator[FakeRetriever]:
    fake = FakeRetriever()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            url = urlparse(self.path)
            if url.path == "/candidates":
                status, body = fake.answer(parse_qs(url.query))
            else:
                status, body = fake.catalog(url.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def candidate_rows(track_ids: list[str], cold: set[str] = frozenset()) -> list[dict]:
    return [{"track_id": t, "score": 1.0 - i / 1000, "cold": t in cold} for i, t in enumerate(track_ids)]
