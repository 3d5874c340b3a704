"""TASTE/RecBole atomic files: loading, feature typing, content files in every format, convert, bad input."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file

from encore.errors import EncoreError
from training.convert_taste import convert
from training.datasets.content_files import read_content_file
from training.datasets.registry import load_dataset

ROOT = Path(__file__).resolve().parents[3]
N_USERS, N_ITEMS, DIM, LAYERS = 60, 90, 8, 4


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(tmp_path / "cache"))


def write_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def item_vectors(rng) -> np.ndarray:
    return rng.normal(size=(N_ITEMS, LAYERS, DIM)).astype(np.float32)


def write_taste_folder(root: Path, name: str = "lfmmini", seed: int = 0) -> Path:
    """A small music dataset in TASTE's layout: string tokens, plays, user/item features, MuQ-like content."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "content").mkdir(parents=True)
    users = [f"u{u:03d}" for u in range(N_USERS)]
    items = [f"t{i:04d}" for i in range(N_ITEMS)]
    vectors = item_vectors(rng)
    taste = rng.normal(size=(N_USERS, DIM))
    rows = []
    for u in range(N_USERS):
        for i in rng.choice(N_ITEMS, size=25, replace=False):
            affinity = taste[u] @ vectors[i, -1]
            rows.append([users[u], items[i], int(1 + rng.poisson(np.exp(0.4 * affinity))), 1_600_000_000 + len(rows)])
    write_atomic(
        folder / f"{name}.inter", ["user_id:token", "item_id:token", "num_repeat:float", "timestamp:float"], rows
    )
    write_atomic(
        folder / f"{name}.user",
        ["user_id:token", "country:token", "age:float"],
        [[u, rng.choice(["UK", "US", "DE"]), int(rng.integers(15, 60))] for u in users],
    )
    write_atomic(
        folder / f"{name}.item",
        ["item_id:token", "genre:token", "release_year:float", "tags:token_seq"],
        [[t, rng.choice(["rock", "pop", "jazz"]), int(rng.integers(1970, 2024)), "guitar live"] for t in items],
    )
    np.savez(folder / "content" / "muq.npz", item_ids=np.array(items), layers=vectors)
    return folder


def test_loads_features_by_header_type_and_dense_content(tmp_path):
    folder = write_taste_folder(tmp_path)
    data = load_dataset("taste", folder, "id+cat+num", "dense")
    kinds = {f.name: f.kind for f in data.fields}
    assert kinds == {
        "user_id": "id",
        "track_id": "id",
        "country": "categorical",
        "genre": "categorical",
        "tags": "token_list",
        "age": "numeric",
        "release_year": "numeric",
        "audio_emb": "dense",
    }
    assert {"valid", "test"} <= set(data.eval_splits()) and len(data.train) > 0
    assert set(data.test["label"]) == {0, 1}
    # Frozen eval negatives are saved and hashed with the input files.
    assert any(p.endswith("test.parquet") for p in data.files) and any(p.endswith("muq.npz") for p in data.files)
    # Content follows the item: equal vectors for the same track id.
    test = data.test
    first = test.groupby("track_id")["audio_emb"].first()
    assert len(first) > 10 and all(np.asarray(v).shape == (DIM,) for v in first)
    # Every build step leaves counts and a checksum for the manifest.
    steps = {s["step"]: s for s in data.steps}
    assert steps["input"]["rows"] == N_USERS * 25 and steps["input"]["users"] == N_USERS
    assert steps["eval:test+negatives"]["rows"] == len(data.test)
    split_rows = sum(steps[f"split:{name}"]["rows"] for name in ("train", "valid", "test"))
    assert split_rows == steps["dedup+5-core"]["rows"]
    only_ids = load_dataset("taste", folder, "id", "none")
    assert [f.name for f in only_ids.fields] == ["user_id", "track_id"]


def test_tokens_content_and_cold_split(tmp_path):
    from training.datasets.protocol import ProtocolConfig

    folder = write_taste_folder(tmp_path)
    data = load_dataset("taste", folder, "id", "tokens", protocol=ProtocolConfig(cold_share=0.2))
    token_fields = [f.name for f in data.fields if f.name.startswith("audio_tok_")]
    assert len(token_fields) == LAYERS  # one codebook per layer
    assert {"cold", "mixed"} <= set(data.eval_splits())
    assert not set(data.extra_eval["cold"]["track_id"]) & set(data.train["track_id"])
    assert (data.run_files["codebooks"]).is_dir()


def test_every_content_format_reads_the_same_arrays(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"t{i}" for i in range(5)]
    layers = rng.normal(size=(5, 2, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", item_ids=np.array(ids), layers=layers)
    np.save(tmp_path / "b.npy", layers)
    (tmp_path / "b.ids.txt").write_text("\n".join(ids))
    save_file({t: layers[i] for i, t in enumerate(ids)}, str(tmp_path / "c.safetensors"))
    pd.DataFrame({"item_id": ids, "embedding": [v.tolist() for v in layers]}).to_parquet(tmp_path / "d.parquet")
    for name in ("a.npz", "b.npy", "c.safetensors", "d.parquet"):
        arrays = read_content_file(tmp_path / name)
        order = np.argsort(arrays.item_ids)
        assert [arrays.item_ids[i] for i in order] == ids, name
        np.testing.assert_allclose(arrays.layers[order], layers.reshape(5, 8), err_msg=name)  # flat, row-major
        assert arrays.encoder["layer_widths"] == [4, 4], name
        assert arrays.encoder["n_layers"] == 2 and arrays.encoder["dim"] == 4


def _content(folder: Path, ids, layers, **sidecar):
    np.savez(folder / "content" / "muq.npz", item_ids=np.array(ids), layers=layers)
    if sidecar:
        (folder / "content" / "muq.json").write_text(json.dumps(sidecar))


def test_bad_content_fails_clearly_unless_missing_policy_is_set(tmp_path):
    folder = write_taste_folder(tmp_path)
    items = [f"t{i:04d}" for i in range(N_ITEMS)]
    vectors = item_vectors(np.random.default_rng(3))

    _content(folder, items, vectors, backend="muq", dim=1024)
    with pytest.raises(EncoreError, match=r"has layers .*'dim': 8.*declares \{'dim': 1024\}"):
        load_dataset("taste", folder, "id", "dense")
    (folder / "content" / "muq.json").unlink()

    _content(folder, [*items[:-1], items[0]], vectors)
    with pytest.raises(EncoreError, match="duplicate content keys"):
        load_dataset("taste", folder, "id", "dense")

    _content(folder, items[:-10], vectors[:-10])
    with pytest.raises(EncoreError, match="content missing for .* items"):
        load_dataset("taste", folder, "id", "dense")
    data = load_dataset("taste", folder, "id", "dense", missing="zeros")
    mask = data.test.groupby("track_id")["audio_missing"].first()
    has_content = set(range(N_ITEMS - 10))  # ids are the sorted token order, so t0000.. -> 0..
    assert all(mask[i] == (0 if i in has_content else 1) for i in mask.index)

    np.save(folder / "content" / "other.npy", vectors)
    with pytest.raises(EncoreError, match="2 content files .*--content-file"):
        load_dataset("taste", folder, "id", "dense")
    with pytest.raises(EncoreError, match="needs its item tokens"):
        load_dataset("taste", folder, "id", "dense", content_file="other.npy")


def test_misnamed_columns_fail_with_the_known_columns(tmp_path):
    folder = write_taste_folder(tmp_path)
    with pytest.raises(EncoreError, match=r"unknown column\(s\) \['colour'\]; known feature columns: .*'genre'"):
        load_dataset("taste", folder, "id+cat", "none", columns="genre,colour")
    with pytest.raises(EncoreError, match=r"missing column\(s\) \['track'\].*--inter-fields"):
        load_dataset("taste", folder, "id", "none", inter_fields=("user_id", "track", "num_repeat"))
    data = load_dataset("taste", folder, "id+cat", "none", columns="genre")
    assert [f.name for f in data.fields] == ["user_id", "track_id", "genre"]

    inter = folder / f"{folder.name}.inter"
    inter.write_text(inter.read_text().replace("timestamp:float", "listened_at:float", 1))
    with pytest.raises(EncoreError, match=r"unknown column\(s\) \['listened_at'\]"):
        load_dataset("taste", folder, "id", "none")
    inter.write_text(inter.read_text().replace("listened_at:float", "timestamp:date", 1))
    with pytest.raises(EncoreError, match="unknown type 'date'"):
        load_dataset("taste", folder, "id", "none")


def test_convert_reads_numpy_pickles_and_torch_files_and_refuses_code(tmp_path):
    rng = np.random.default_rng(0)
    feats = {f"t{i}": rng.normal(size=(3, 4)).astype(np.float32) for i in range(6)}
    src = tmp_path / "muq.pkl"
    src.write_bytes(pickle.dumps(feats))
    out = convert(src, tmp_path / "content" / "muq.npz", encoder={"backend": "muq"})
    arrays = read_content_file(out)
    assert arrays.encoder["backend"] == "muq" and arrays.layers.shape == (6, 12)
    np.testing.assert_array_equal(arrays.layers[arrays.item_ids.index("t2")], np.ravel(feats["t2"]))
    (tmp_path / "muq5.pkl").write_bytes(pickle.dumps(feats, protocol=5))  # numpy pickles via _frombuffer
    arrays5 = read_content_file(convert(tmp_path / "muq5.pkl", tmp_path / "content" / "muq5.npz"))
    np.testing.assert_array_equal(arrays5.layers, arrays.layers)

    torch.save({k: torch.from_numpy(v[-1]) for k, v in feats.items()}, tmp_path / "clap.pt")
    arrays = read_content_file(convert(tmp_path / "clap.pt", tmp_path / "clap.npz"))
    assert arrays.layers.shape == (6, 4)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"t0": Evil()}))
    proc = subprocess.run(
        [sys.executable, "-m", "training.convert_taste", str(tmp_path / "evil.pkl"), str(tmp_path / "evil.npz")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: the pickle refers to") and "system" in proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.npz").exists()

    ragged = {"a": np.zeros((3, 4), np.float32), "b": np.zeros((5, 4), np.float32)}
    (tmp_path / "frames.pkl").write_bytes(pickle.dumps(ragged))
    with pytest.raises(EncoreError, match="has shape"):
        convert(tmp_path / "frames.pkl", tmp_path / "frames.npz")
    pooled = read_content_file(convert(tmp_path / "frames.pkl", tmp_path / "frames.npz", pool="mean"))
    assert pooled.layers.shape == (2, 4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_benchmark_cli_runs_on_taste_files(tmp_path):
    folder = write_taste_folder(tmp_path / "data")
    cmd = [sys.executable, str(ROOT / "training" / "run_benchmark.py"), "--threads", "1", "--no-progress"]
    env = {**os.environ, "ENCORE_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--dataset", "taste", "--data-root", str(folder), "--models", "DeepFM", "--features", "id+cat"]
    proc = subprocess.run(
        [*cmd, *args, "--content", "none,tokens", "--epochs", "2", "--cold", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(results["content"]) == {"none", "tokens"} and {"test", "cold", "mixed"} <= set(results["split"])
    assert results["auc"].between(0, 1).all()
    manifest = json.loads(next((tmp_path / "out" / "runs").glob("*/manifest.json")).read_text())
    assert [s["step"] for s in manifest["data_steps"]][:2] == ["input", "dedup+5-core"]

    bad = subprocess.run(
        [*cmd, *args, "--columns", "genre,mood", "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown column(s) ['mood']")


def test_pickle_is_read_only_by_convert():
    """The promise in training/convert_taste.py: no other module of ours unpickles."""
    offenders = []
    for path in [*ROOT.glob("encore/**/*.py"), *ROOT.glob("training/**/*.py"), *ROOT.glob("services/**/*.py")]:
        text = path.read_text()
        if path.name != "convert_taste.py" and ("import pickle" in text or "allow_pickle=True" in text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
