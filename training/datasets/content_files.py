"""Content arrays keyed by item token, read from npz, npy (+ ids file), safetensors or parquet.

Every format gives the same thing: item tokens and flat (N, total) float32 content with its layers' widths
(encore/audio/layers.py): a (N, L, D) file is L layers of width D; a (N, D) file is one layer, unless a sidecar
`<file stem>.json` describing the encoder (backend, revision, n_layers, dim, layer_widths, ...) cuts it into
layers. What the sidecar declares, the arrays must match. Nothing here unpickles: `training.convert_taste` turns
TASTE's pickled dicts into one of these formats first.

  .npz          arrays `item_ids` (str, N) and `layers` (N, L, D) or `embeddings` (N, D); `track_ids` is
                accepted for `item_ids` (what `python -m training.extract_audio` writes)
  .npy          a (N, D) or (N, L, D) array, plus `<stem>.ids.txt` with one item token per line
  .safetensors  one tensor per item, named by its token (TASTE's {token: vector} dict, in a safe format)
  .parquet      columns `item_id` and `embedding` (a list of floats, or a list of per-layer lists)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from encore.audio.layers import LayerLayout
from encore.errors import EncoreError
from encore.io import sha256_file
from training.datasets.content import ContentArrays

CONTENT_SUFFIXES = (".npz", ".npy", ".safetensors", ".parquet")


def read_content_file(path: str | Path) -> ContentArrays:
    """ContentArrays from one content file; raises EncoreError naming the file and what is wrong with it."""
    path = Path(path)
    if path.suffix not in CONTENT_SUFFIXES:
        raise EncoreError(
            f"{path}: unsupported content format {path.suffix!r}; use one of {', '.join(CONTENT_SUFFIXES)}"
        )
    if not path.is_file():
        raise EncoreError(f"content file not found: {path}")
    reader = {".npz": _read_npz, ".npy": _read_npy, ".safetensors": _read_safetensors, ".parquet": _read_parquet}
    ids, layers = reader[path.suffix](path)
    if layers.ndim not in (2, 3):
        raise EncoreError(f"{path}: content must be (N, D) or (N, L, D), got shape {layers.shape}")
    if len(ids) != layers.shape[0]:
        raise EncoreError(f"{path}: {len(ids)} item ids for {layers.shape[0]} vectors")
    encoder = _sidecar(path)
    layout = _layout(path, layers, encoder)
    encoder.update(layer_widths=list(layout.widths), n_layers=layout.n_layers, dim=layout.widths[-1])
    encoder.setdefault("backend", f"file:{path.name}")
    flat = layers.reshape(len(layers), -1).astype(np.float32, copy=False)
    return ContentArrays([str(i) for i in ids], flat, encoder, sha256_file(path))


def _layout(path: Path, layers: np.ndarray, encoder: dict) -> LayerLayout:
    """The layers of the file's content: its own (N, L, D) shape, else what the sidecar declares, else one."""
    if layers.ndim == 3:
        layout = LayerLayout.uniform(layers.shape[1], layers.shape[2])
    elif encoder.get("layer_widths") or encoder.get("n_layers") is not None:
        try:
            layout = LayerLayout.of({"dim": layers.shape[1] // max(1, int(encoder.get("n_layers", 1))), **encoder})
        except ValueError as exc:
            raise EncoreError(f"{path.with_suffix('.json')}: {exc}") from exc
    else:
        layout = LayerLayout((layers.shape[1],))
    declared = {key: encoder[key] for key in ("n_layers", "dim", "layer_widths") if key in encoder}
    actual = {"n_layers": layout.n_layers, "dim": layout.widths[-1], "layer_widths": list(layout.widths)}
    mismatched = {key: value for key, value in declared.items() if value != actual[key]}
    if mismatched or layout.total != int(np.prod(layers.shape[1:])):
        raise EncoreError(
            f"{path}: content of shape {layers.shape} has layers {actual}, but {path.with_suffix('.json')} "
            f"declares {declared}"
        )
    return layout


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise EncoreError(f"{side}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise EncoreError(f"{side}: must be a JSON object describing the encoder")
    return info


def _read_npz(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        id_key = next((k for k in ("item_ids", "track_ids") if k in keys), None)
        vec_key = next((k for k in ("layers", "embeddings") if k in keys), None)
        if id_key is None or vec_key is None:
            raise EncoreError(f"{path}: needs arrays 'item_ids' and 'layers' (or 'embeddings'); it has {sorted(keys)}")
        return data[id_key].astype(str).tolist(), np.asarray(data[vec_key])


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    ids_path = path.with_suffix(".ids.txt")
    if not ids_path.is_file():
        raise EncoreError(f"{path}: a .npy content file needs its item tokens in {ids_path} (one per line)")
    ids = [line.strip() for line in ids_path.read_text().splitlines() if line.strip()]
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise EncoreError(f"{path}: not a plain numeric array ({exc}); pickled objects are never loaded") from exc
    return ids, array


def _read_safetensors(path: Path) -> tuple[list[str], np.ndarray]:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise EncoreError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not tensors:
        raise EncoreError(f"{path}: holds no tensors")
    ids = sorted(tensors)
    shape = tensors[ids[0]].shape
    for token in ids:
        if tensors[token].shape != shape:
            raise EncoreError(
                f"{path}: item {token!r} has shape {tensors[token].shape}, but item {ids[0]!r} has {shape}"
            )
    return ids, np.stack([tensors[t] for t in ids])


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    frame = pd.read_parquet(path)
    missing = [c for c in ("item_id", "embedding") if c not in frame.columns]
    if missing:
        raise EncoreError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")
    vectors = [np.asarray(v.tolist() if hasattr(v, "tolist") else v, dtype=np.float32) for v in frame["embedding"]]
    shapes = {v.shape for v in vectors}
    if len(shapes) > 1:
        first = vectors[0].shape
        bad = next(i for i, v in enumerate(vectors) if v.shape != first)
        raise EncoreError(
            f"{path}: item {frame['item_id'].iloc[bad]!r} has an embedding of shape {vectors[bad].shape}, "
            f"but item {frame['item_id'].iloc[0]!r} has {first}"
        )
    return frame["item_id"].astype(str).tolist(), np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
