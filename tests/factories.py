"""Small generated datasets for tests: every field kind, with a planted signal to learn; bundle tampering."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from encore.io import sha256_file
from encore.schema import FieldConfig

FRAPPE_COLUMNS = [
    "label",
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
]


def make_mixed_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows whose label depends on a categorical, a numeric, a token list and a dense vector."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 50, n)
    genre = rng.choice(["rock", "jazz", "pop", "folk"], n)
    plays = rng.gamma(2.0, 10.0, n)
    tags = ["|".join(rng.choice(["a", "b", "c", "d", "e"], rng.integers(0, 4), replace=False)) for _ in range(n)]
    audio = rng.normal(size=(n, 6)).astype(np.float32)
    logit = (
        (genre == "jazz") * 1.5
        - (genre == "pop") * 1.0
        + 0.03 * (plays - 20)
        + np.array(["a" in t for t in tags]) * 1.0
        + 1.2 * audio[:, 0]
        + (user % 2) * 0.5
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "label": label,
            "user": user,
            "genre": genre,
            "plays": plays,
            "plays_raw": plays,
            "tags": tags,
            "audio": list(audio),
        }
    )


MIXED_FIELDS = [
    FieldConfig("user", "id", owner="user"),
    FieldConfig("genre", "categorical", owner="item"),
    FieldConfig("plays", "numeric", owner="item", numeric_mode="quantile", n_buckets=8),
    FieldConfig("plays_raw", "numeric", owner="item", numeric_mode="scale"),
    FieldConfig("tags", "token_list", owner="item", max_len=4),
    FieldConfig("audio", "dense", owner="item", dim=6),
]


def write_frappe_like(folder, n_train=3000, n_eval=800, seed=0):
    """Files in the Frappe x1 layout (label + ten integer id columns) under folder/frappe/x1."""
    rng = np.random.default_rng(seed)
    x1 = folder / "frappe" / "x1"
    x1.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        cols = {c: rng.integers(0, 6, n) + 10 * i for i, c in enumerate(FRAPPE_COLUMNS[1:])}
        logit = (cols["item"] % 3 == 0) * 2.0 - 1.0 + (cols["user"] % 2)
        cols = {"label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int), **cols}
        pd.DataFrame(cols)[FRAPPE_COLUMNS].to_csv(x1 / f"{name}.csv", index=False)
    return x1


# --- bundles tampered with after they were built (tests of encore.bundle_check) --------------------------------


def edit_manifest(bundle: Path, **changes: object) -> dict:
    """Rewrite `bundle/manifest.json` with top-level `changes` (None removes a field); returns the new doc."""
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    doc = {k: v for k, v in doc.items() if v is not None}
    path.write_text(json.dumps(doc))
    return doc


def clone_bundle(source: Path, root: Path, bundle_id: str) -> Path:
    """A copy of a built bundle under `root/bundle_id` whose manifest names its new folder: it loads as well
    as the source does, so each test's one tampering is the only thing wrong with it."""
    target = root / bundle_id
    shutil.copytree(source, target)
    edit_manifest(target, bundle_id=bundle_id)
    return target


def relist(bundle: Path, relative: str) -> None:
    """Record `relative`'s current checksum and size in the manifest (a file replaced on purpose)."""
    doc = json.loads((bundle / "manifest.json").read_text())
    edit_manifest(
        bundle,
        files={**doc["files"], relative: sha256_file(bundle / relative)},
        sizes={**doc["sizes"], relative: (bundle / relative).stat().st_size},
    )


def externalize_onnx_weights(model_path: Path, location: str) -> None:
    """Move every initializer's bytes of the ONNX graph at `model_path` into `location` (relative to its folder,
    '..' allowed: the onnx package refuses to write such a location, which a tampered bundle may still hold)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(model_path)
    data = bytearray()
    for tensor in model.graph.initializer:
        raw = onnx.numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("raw_data")
        for name in ("float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(name)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in {"location": location, "offset": str(len(data)), "length": str(len(raw))}.items():
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        data += raw
    target = model_path.parent / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    model_path.write_bytes(model.SerializeToString())
