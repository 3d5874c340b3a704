"""Convert TASTE's pickled feature dicts ({item token: vector}) into a safe content file.

    python -m training.convert_taste FEATURES.pkl OUT.npz [--encoder muq --revision ...]

THIS IS THE ONLY PLACE IN ENCORE THAT READS A PICKLE. Run it only on files you trust. Even so it does not
call plain `pickle.load`: a restricted unpickler accepts nothing but dicts, lists, tuples, numbers, strings and
numpy arrays, and a `torch.save` file is read with `torch.load(weights_only=True)`; anything else (code,
arbitrary classes) is refused. Vectors may be (D,), (L, D) per item, or (1, T, D) / (T, D) frame sequences
when `--pool mean` is given. The output is `OUT.npz` (arrays `item_ids`, `layers` (N, L, D) float32) plus
`OUT.json` describing where it came from, the format `--dataset taste` content files use
(training/datasets/content_files.py). Written to a temp file and renamed: a failed run leaves nothing.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from encore.errors import EncoreError
from encore.io import atomic_path, sha256_file, write_json_atomic

# The globals a pickle of numpy arrays in plain containers needs, and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise EncoreError(
                f"the pickle refers to {module}.{name}; convert only loads dicts of numpy arrays (or torch.save "
                "files of tensors) and refuses anything else"
            )
        return super().find_class(module, name)


def read_feature_pickle(path: Path) -> dict[str, np.ndarray]:
    """{item token: float32 array} from a TASTE feature pickle or torch.save file, loaded restrictively."""
    if not path.is_file():
        raise EncoreError(f"file not found: {path}")
    if zipfile.is_zipfile(path):
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's restricted loader raises UnpicklingError or RuntimeError
            raise EncoreError(f"{path}: torch.load(weights_only=True) refused it ({exc})") from exc
    else:
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
        except EncoreError:
            raise
        except Exception as exc:
            raise EncoreError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not obj:
        raise EncoreError(f"{path}: expected a non-empty dict {{item token: vector}}, got {type(obj).__name__}")
    out = {}
    for token, value in obj.items():
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float32)
        out[str(token)] = array
    if len(out) != len(obj):
        raise EncoreError(f"{path}: {len(obj) - len(out)} keys collide once written as strings")
    return out


def to_layers(vectors: dict[str, np.ndarray], pool: str) -> tuple[list[str], np.ndarray]:
    """Item tokens (sorted) and a (N, L, D) stack; every item must have the same shape."""
    tokens = sorted(vectors)
    first = vectors[tokens[0]].shape
    for token in tokens:
        shape = vectors[token].shape
        if pool == "none" and shape != first:
            raise EncoreError(f"item {token!r} has shape {shape}, but item {tokens[0]!r} has {first}")
        if not np.isfinite(vectors[token]).all():
            raise EncoreError(f"item {token!r} holds non-finite values")
    if pool == "mean":  # frame sequences (T, D) or (1, T, D) of varying T: mean over time -> one layer
        pooled = [vectors[t].reshape(-1, vectors[t].shape[-1]).mean(0) for t in tokens]
        dims = {p.shape for p in pooled}
        if len(dims) > 1:
            raise EncoreError(f"items have different vector sizes after pooling: {sorted(dims)}")
        return tokens, np.stack(pooled)[:, None, :]
    stack = np.stack([vectors[t] for t in tokens])
    if stack.ndim == 2:
        stack = stack[:, None, :]
    if stack.ndim != 3:
        raise EncoreError(f"vectors of shape {first} are neither (D,) nor (L, D); use --pool mean for frame sequences")
    return tokens, stack


def convert(src: Path, out: Path, pool: str = "none", encoder: dict[str, Any] | None = None) -> Path:
    if out.suffix != ".npz":
        raise EncoreError(f"output must be a .npz file, got {out}")
    tokens, layers = to_layers(read_feature_pickle(src), pool)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a handle: np.savez would add .npz to a path
        np.savez(f, item_ids=np.array(tokens), layers=layers.astype(np.float32))
    info = {
        **(encoder or {}),
        "backend": (encoder or {}).get("backend") or f"taste-pickle:{src.name}",
        "n_layers": int(layers.shape[1]),
        "dim": int(layers.shape[2]),
        "pool": pool,
        "converted_from": {"file": src.name, "sha256": sha256_file(src)},
    }
    write_json_atomic(out.with_suffix(".json"), info)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="TASTE feature pickle (.pkl) or torch.save file")
    p.add_argument("out", type=Path, help="output .npz (a .json sidecar is written beside it)")
    p.add_argument("--pool", choices=["none", "mean"], default="none", help="mean: average frame sequences")
    p.add_argument("--encoder", default=None, help="encoder name to record, e.g. muq")
    p.add_argument("--revision", default=None, help="encoder revision/checkpoint to record")
    args = p.parse_args(argv)
    encoder = {k: v for k, v in (("backend", args.encoder), ("revision", args.revision)) if v}
    try:
        out = convert(args.source, args.out, args.pool, encoder)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
