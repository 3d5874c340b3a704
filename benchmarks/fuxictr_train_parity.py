"""Encore's CTR training step against FuxiCTR 2.3.10's, from the same weights on the same batches.

Where fuxictr_forward_parity.py checks one forward pass, this trains both sides: FuxiCTR's zoo model with its
own loss, regularization_loss(), gradient clipping and Adam (its train_step), and Encore's model with
training.trainer's batch_loss, clipping and fused Adam, both starting from FuxiCTR's initial weights (every
table and layer copied by an explicit name map) and fed the same Frappe x1 training batches in the same
order. Dropout is off on both sides (their masks come from different generators), so the two runs compute
the same function: their losses and validation AUCs stay together until float rounding, amplified by the
training dynamics, pulls them apart. A difference in the loss, the penalties, the clipping, the optimizer or a
hand-written backward (AFM's attention, the CIN) would show in the first steps.

How fast rounding alone pulls two runs apart depends on the model (batch norm amplifies it within a few steps),
so `--control` trains FuxiCTR against itself from initial weights 1e-7 (relative) apart: a model whose gap to
Encore grows no faster than its control's is the same computation. Per-step losses and per-epoch validation AUCs
go to `--out` (JSON); `python -m training.results --write-docs` turns the committed ones into the table in
docs/benchmarks.md and, with --charts, docs/fuxictr_train_parity.png.

Run with the FuxiCTR interpreter (it imports both libraries):

    RAY_USAGE_STATS_ENABLED=0 /work/fuxictr-env/bin/python benchmarks/fuxictr_train_parity.py \\
        --fuxictr-src /work/fuxictr-src --data-dir ../shared/data/frappe/x1 --epochs 5 \\
        --out docs/results/ctr_vs_fuxictr_fp32/train_parity_seed2021.json        # and again with --control
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.fuxictr_forward_parity import NAME_MAPS, _encore_spec, _load_module  # noqa: E402

BATCH_SIZE = 4096  # BARS's, both sides
FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]


def load_frappe(data_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Train and valid as (rows, fields) int64 ids (train's values from FIRST_VOCAB up, unseen -> OOV) + labels.

    Not training.datasets.frappe: this runs in FuxiCTR's interpreter, which lacks Encore's settings packages; both
    models read the same ids, so only the vocabulary rule (fit on train, OOV otherwise) has to match."""
    from encore.schema import FIRST_VOCAB, OOV

    train, valid = (pd.read_csv(data_dir / f"{s}.csv", dtype=str) for s in ("train", "valid"))
    sizes, out = {}, {"train": [], "valid": []}
    for f in FIELDS:
        values = pd.unique(train[f])
        index = pd.Index(values)
        sizes[f] = FIRST_VOCAB + len(values)
        for split, frame in (("train", train), ("valid", valid)):
            codes = index.get_indexer(frame[f])
            out[split].append(np.where(codes < 0, OOV, codes + FIRST_VOCAB))
    arrays = {s: np.stack(cols, axis=1).astype(np.int64) for s, cols in out.items()}
    arrays["train_y"] = train["label"].astype(np.float32).to_numpy()
    arrays["valid_y"] = valid["label"].astype(np.float32).to_numpy()
    return arrays, sizes


def fuxictr_feature_map(sizes: dict[str, int], work: Path, hparams: dict[str, Any]) -> Any:
    from fuxictr.features import FeatureMap

    doc = {
        "dataset_id": "parity",
        "num_fields": len(sizes),
        "total_features": sum(sizes.values()),
        "input_length": len(sizes),
        "labels": ["label"],
        "features": [{f: {"source": "", "type": "categorical", "vocab_size": n}} for f, n in sizes.items()],
    }
    path = work / "feature_map.json"
    path.write_text(json.dumps(doc))
    feature_map = FeatureMap("parity", str(work))
    feature_map.load(str(path), hparams)
    return feature_map


_TABLE = re.compile(r"^(embedding_layer|lr_layer)\..*embedding_layers\.(\w+)\.weight$")
_GATE_TABLE = re.compile(r"^fs_module\.fs([12])_ctx_emb\..*embedding_layers\.(\w+)\.weight$")


def parameter_map(name: str, fx: nn.Module, sizes: dict[str, int], hparams: dict[str, Any]) -> list[tuple]:
    """(FuxiCTR name, Encore name, first row or None) for every trained FuxiCTR parameter: per-field tables go to
    their block of Encore's shared table (rows from the field's offset), FinalMLP's context tables to the gates'
    own tables, the rest by NAME_MAPS."""
    offsets = dict(zip(sizes, np.cumsum([0, *sizes.values()])[:-1].tolist(), strict=True))
    out = []
    for key, value in fx.named_parameters():
        if not value.requires_grad:  # index buffers kept as frozen parameters (AFM's triu_index)
            continue
        if m := _TABLE.match(key):
            target = "embedding.sparse.weight" if m.group(1) == "embedding_layer" else "linear.weights.sparse.weight"
            out.append((key, target, offsets[m.group(2)]))
            continue
        if m := _GATE_TABLE.match(key):
            field_index = hparams[f"fs{m.group(1)}_context"].index(m.group(2))
            out.append((key, f"gate{m.group(1)}.tables.{field_index}.weight", None))
            continue
        target = "linear.bias" if key == "lr_layer.bias" else None
        for pattern, repl in NAME_MAPS[name] if target is None else ():
            if m := re.match(pattern, key):
                if "{k}" in repl:  # CIN: FuxiCTR numbers its Conv1d layers from 1
                    repl = repl.replace("{k}", str(int(m.group(1)) - 1))
                target = re.sub(pattern, repl, key)
                break
        out.append((key, target, None))
    return out


def _pairs(mapping: list[tuple], fx: nn.Module, en: nn.Module):
    """(Encore name, FuxiCTR tensor, the Encore tensor or rows it corresponds to) per mapped parameter."""
    fx_params, en_params = dict(fx.named_parameters()), dict(en.named_parameters())
    for fx_key, en_key, row in mapping:
        if en_key not in en_params:
            raise SystemExit(f"no Encore parameter for FuxiCTR's {fx_key} (mapped to {en_key})")
        source, target = fx_params[fx_key], en_params[en_key]
        if row is not None:
            target = target[row : row + source.shape[0]]
        yield en_key, source, target


def copy_weights(mapping: list[tuple], fx: nn.Module, en: nn.Module) -> None:
    """FuxiCTR's initial weights into Encore's model; raises on an Encore parameter left without a source."""
    with torch.no_grad():
        for _, source, target in _pairs(mapping, fx, en):
            target.copy_(source.reshape(target.shape))  # Conv1d (out, in, 1) -> Linear and the like
    left = sorted(set(dict(en.named_parameters())) - {en_key for _, en_key, _ in mapping})
    if left:
        raise SystemExit(f"Encore parameters without a FuxiCTR source: {left}")


def drift(mapping: list[tuple], fx: nn.Module, en: nn.Module) -> dict[str, float]:
    """Per Encore tensor: max |FuxiCTR - Encore| / max |FuxiCTR| (tables: over all their fields' blocks)."""
    diff: dict[str, float] = {}
    scale: dict[str, float] = {}
    with torch.no_grad():
        for en_key, source, target in _pairs(mapping, fx, en):
            diff[en_key] = max(diff.get(en_key, 0.0), float((source.reshape(target.shape) - target).abs().max()))
            scale[en_key] = max(scale.get(en_key, 0.0), float(source.abs().max()))
    return {k: diff[k] / (scale[k] + 1e-12) for k in diff}


def _auc(model: nn.Module, predict, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        scores = np.concatenate([predict(torch.from_numpy(x[i : i + 16384])) for i in range(0, len(x), 16384)])
    model.train()
    return float(roc_auc_score(y, scores))


def compare(name: str, bench: Any, zoo_root: Path, data: dict, sizes: dict[str, int], args: argparse.Namespace) -> dict:
    from training.models.registry import get_ctr_model
    from training.run_benchmark import load_config

    hparams = dict(bench.MODELS[name]["hparams"], verbose=0, model_root="/tmp/fuxictr_parity_ckpt")
    model_cfg = dict(load_config("frappe")["models"][name]["model"])
    no_dropout = {k: (([0.0] * len(v)) if isinstance(v, list) else 0.0) for k, v in hparams.items() if "dropout" in k}
    hparams.update(no_dropout)
    for key in [k for k in model_cfg if "dropout" in k]:
        model_cfg[key] = [0.0] * len(model_cfg[key]) if isinstance(model_cfg[key], list) else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        feature_map = fuxictr_feature_map(sizes, Path(tmp), hparams)
        zoo = _load_module(zoo_root / bench.MODELS[name]["fuxictr_zoo"] / "src" / "__init__.py", f"zoo_{name}")
        torch.manual_seed(args.seed)
        fx = getattr(zoo, name)(feature_map, gpu=-1, **hparams)
    fx._max_gradient_norm = hparams["max_gradient_norm"]  # set by fit(), which this loop replaces

    def fx_batch(x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        batch = {f: x[:, i] for i, f in enumerate(FIELDS)}
        if y is not None:
            batch["label"] = y
        return batch

    def fx_side(model: nn.Module) -> tuple[Callable, Callable]:
        return (
            lambda xb, yb: model.train_step(fx_batch(xb, yb)),
            lambda b: model(fx_batch(b))["y_pred"].squeeze(1).numpy(),
        )

    if args.control:  # FuxiCTR against itself, from initial weights one rounding step apart
        other = copy.deepcopy(fx)  # its optimizer comes along, bound to the copy's parameters
        generator = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for param in other.parameters():
                if param.requires_grad:
                    param.mul_(1 + 1e-7 * torch.randn(param.shape, generator=generator))
        mapping = [(k, k, None) for k, v in fx.named_parameters() if v.requires_grad]
        step_b, predict_b = fx_side(other)
    else:
        other = get_ctr_model(name)(_encore_spec(feature_map), **model_cfg)
        mapping = parameter_map(name, fx, sizes, hparams)
        copy_weights(mapping, fx, other)
        step_b, predict_b = encore_side(name, other)
    step_a, predict_a = fx_side(fx)
    fx.train()
    other.train()
    x, y = data["train"], data["train_y"]
    order = np.random.default_rng(args.seed)
    steps: list[list[float]] = []
    epochs: list[dict[str, Any]] = []
    for epoch in range(1, args.epochs + 1):
        perm = order.permutation(len(x))
        for start in range(0, len(x), BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            loss_a, loss_b = step_a(xb, yb), step_b(xb, yb)  # no timing: interleaved, they share the caches
            steps.append([float(f"{loss.item():.9g}") for loss in (loss_a, loss_b)])  # float32-exact, shorter JSON
        auc_a = _auc(fx, predict_a, data["valid"], data["valid_y"])
        auc_b = _auc(other, predict_b, data["valid"], data["valid_y"])
        rel = drift(mapping, fx, other)
        worst = max(rel, key=rel.get)
        epochs.append(
            {
                "epoch": epoch,
                "valid_auc_fuxictr": auc_a,
                "valid_auc_other": auc_b,
                "max_rel_param_diff": rel[worst],
                "worst_param": worst,
                "rel_param_diff": rel,
            }
        )
        print(
            f"{name} epoch {epoch}: valid AUC FuxiCTR {auc_a:.6f} {'control' if args.control else 'Encore'} "
            f"{auc_b:.6f} (diff {auc_b - auc_a:+.6f}); last loss {steps[-1][0]:.6f} / {steps[-1][1]:.6f}; "
            f"max rel param diff {rel[worst]:.2e} ({worst})",
            file=sys.stderr,
        )
    loss_diff = [abs(a - b) for a, b in steps]
    return {
        "steps": len(steps),
        "max_abs_loss_diff_first_50_steps": max(loss_diff[:50]),
        "max_abs_loss_diff": max(loss_diff),
        "step_losses": steps,  # [FuxiCTR, other] per step
        "epochs": epochs,
        "dropout_off": sorted(no_dropout),
    }


def encore_side(name: str, model: nn.Module) -> tuple[Callable, Callable]:
    """Encore's training step (training.trainer's batch loss with its penalties, clipping, fused Adam) and scores."""
    from training.run_benchmark import load_config
    from training.trainer import TrainConfig, adam, batch_loss

    config = load_config("frappe")
    train = {**config["train"], **config["models"][name].get("train", {})}
    cfg = TrainConfig(embedding_l2=train.get("embedding_l2", 0.0), net_l2=train.get("net_l2", 0.0), precision="fp32")
    optimizer = adam(model.parameters(), cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    tables = model.embedding_tables()
    net_weights = [p for p in model.parameters() if id(p) not in {id(t) for t in tables}]

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = batch_loss(model, tables, net_weights, {"sparse": xb}, yb, loss_fn, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        return loss

    return step, lambda b: model({"sparse": b}).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(NAME_MAPS), help="comma list; default: every model of NAME_MAPS")
    p.add_argument("--fuxictr-src", type=Path, required=True, help="checkout of reczoo/FuxiCTR (model_zoo/)")
    p.add_argument("--data-dir", type=Path, required=True, help="Frappe x1 (train.csv, valid.csv)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--control",
        action="store_true",
        help="train FuxiCTR against itself from initial weights perturbed by 1e-7 (relative) instead of against "
        "Encore: how far rounding alone moves two runs apart",
    )
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = _load_module(REPO_ROOT / "benchmarks" / "ctr_vs_fuxictr.py", "ctr_vs_fuxictr")
    data, sizes = load_frappe(args.data_dir)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = {m: compare(m, bench, args.fuxictr_src / "model_zoo", data, sizes, args) for m in models}
    meta = {"seed": args.seed, "epochs": args.epochs, "threads": args.threads, "control": args.control}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results, **meta}) + "\n")
    for model, r in results.items():
        last = r["epochs"][-1]
        gap = max(abs(e["valid_auc_other"] - e["valid_auc_fuxictr"]) for e in r["epochs"])
        print(
            f"{model}: max |loss gap| over the first 50 steps {r['max_abs_loss_diff_first_50_steps']:.1e}; "
            f"valid AUC after epoch {last['epoch']} {last['valid_auc_fuxictr']:.6f} / {last['valid_auc_other']:.6f}; "
            f"largest gap of any epoch {gap:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
