"""Encore's CTR models against FuxiCTR 2.3.10's model_zoo, forward pass only: same weights, same embeddings.

Run with the FuxiCTR interpreter (it imports both libraries), after ctr_vs_fuxictr.py has built FuxiCTR's
Frappe feature map once (its --cache-dir):

    RAY_USAGE_STATS_ENABLED=0 /work/fuxictr-env/bin/python benchmarks/fuxictr_forward_parity.py \
        --fuxictr-src /work/fuxictr-src --feature-map /work/fuxictr-cache/frappe_x1_*/feature_map.json

For each model: build FuxiCTR's zoo model and Encore's with the hyper-parameters of ctr_vs_fuxictr.py's
`MODELS` (Encore's come from training/configs/frappe.json, checked equal there), perturb every FuxiCTR
parameter and batch-norm statistic, copy them into Encore's model by an explicit name map, feed both the
same random field embeddings (the tables differ only in row order, a vocabulary detail) and compare the
logits in eval mode. A model whose structure differed (a missing layer, another
activation, another formula) would not match to 1e-4 (float32 rounding through 17 FiGNN layers is ~1e-5).
Exit status 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402  (after the repo is importable)
from torch import nn  # noqa: E402

# FuxiCTR state_dict name -> Encore name (first matching rule wins); embeddings are bypassed on both sides.
NAME_MAPS: dict[str, list[tuple[str, str]]] = {
    "xDeepFM": [
        (r"^dnn\.mlp\.(.*)$", r"mlp.\1"),
        (r"^cin\.cin_layer\.layer_(\d+)\.(weight|bias)$", "cin.compress.{k}.\\2"),
        (r"^cin\.fc\.(.*)$", r"cin.fc.\1"),
    ],
    "FiGNN": [
        (r"^fignn\.gnn\.(\d+)\.W_in$", r"graph_layers.\1.w_in"),
        (r"^fignn\.gnn\.(\d+)\.W_out$", r"graph_layers.\1.w_out"),
        (r"^fignn\.gnn\.(\d+)\.bias_p$", r"graph_layers.\1.bias"),
        (r"^fignn\.gnn\.W_in$", "graph_layers.0.w_in"),
        (r"^fignn\.gnn\.W_out$", "graph_layers.0.w_out"),
        (r"^fignn\.gnn\.bias_p$", "graph_layers.0.bias"),
        (r"^fignn\.gru\.(.*)$", r"gru.\1"),
        (r"^fignn\.W_attn\.weight$", "edge_attention.weight"),
        (r"^fc\.mlp1\.weight$", "node_score.weight"),
        (r"^fc\.mlp2\.0\.weight$", "node_gate.weight"),
    ],
    "FinalMLP": [
        (r"^mlp([12])\.mlp\.(.*)$", r"mlp\1.\2"),
        (r"^fs_module\.fs([12])_gate\.mlp\.(.*)$", r"gate\1.gate.0.\2"),
        (r"^fs_module\.fs([12])_ctx_bias$", r"gate\1.bias"),
        (r"^fusion_module\.(.*)$", r"fusion.\1"),
    ],
    "EulerNet": [
        (r"^mu$", "magnitude"),
        (r"^Euler_interaction_layers\.(\d+)\.inter_orders$", r"layers.\1.orders"),
        (r"^Euler_interaction_layers\.(\d+)\.bias_lam$", r"layers.\1.bias_magnitude"),
        (r"^Euler_interaction_layers\.(\d+)\.bias_theta$", r"layers.\1.bias_phase"),
        (r"^Euler_interaction_layers\.(\d+)\.im\.(.*)$", r"layers.\1.implicit.\2"),
        (r"^Euler_interaction_layers\.(\d+)\.norm_r\.(.*)$", r"layers.\1.norm_re.\2"),
        (r"^Euler_interaction_layers\.(\d+)\.norm_p\.(.*)$", r"layers.\1.norm_im.\2"),
        (r"^reg\.(.*)$", r"fc.\1"),
    ],
    "AFM": [
        (r"^attention\.(.*)$", r"attention.\1"),
        (r"^weight_p\.weight$", "projection.weight"),
    ],
    "WideDeep": [(r"^dnn\.mlp\.(.*)$", r"mlp.\1")],
    "NFM": [(r"^dnn\.mlp\.(.*)$", r"mlp.\1")],
    "MaskNet": [
        (r"^mask_net\.mask_blocks\.(\d+)\.mask_layer\.(.*)$", r"blocks.\1.mask.\2"),
        (r"^mask_net\.mask_blocks\.(\d+)\.hidden_layer\.(.*)$", r"blocks.\1.hidden.\2"),
        (r"^mask_net\.dnn\.mlp\.(.*)$", r"head.\1"),
    ],
    "WuKong": [
        (r"^wukong_stack\.(\d+)\.fmb\.proj_Y$", r"layers.\1.fmb.projection"),
        (r"^wukong_stack\.(\d+)\.fmb\.layer_norm\.(.*)$", r"layers.\1.fmb.norm.\2"),
        (r"^wukong_stack\.(\d+)\.fmb\.mlp\.mlp\.(.*)$", r"layers.\1.fmb.mlp.0.\2"),
        (r"^wukong_stack\.(\d+)\.lcb\.linear\.weight$", r"layers.\1.lcb.weight"),
        (r"^wukong_stack\.(\d+)\.layer_norm\.(.*)$", r"layers.\1.norm.\2"),
        (r"^wukong_stack\.(\d+)\.residual_proj\.(.*)$", r"layers.\1.residual.\2"),
        (r"^fc\.mlp\.(.*)$", r"head.\1"),
    ],
}
SKIPPED = re.compile(r"(embedding_layer|lr_layer|_ctx_emb)")  # bypassed: see Constant below


class Constant(nn.Module):
    """Stands in for an embedding lookup on both sides: returns the given tensor whatever the input."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.value


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _encore_spec(feature_map: Any) -> Any:
    """An Encore spec with FuxiCTR's fields and vocabulary sizes (the values themselves do not matter here)."""
    from encore.schema import FIRST_VOCAB, FeatureSpec, FieldSpec

    fields = []
    for name, f in feature_map.features.items():
        size = int(f["vocab_size"]) - FIRST_VOCAB
        owner = {"user": "user", "item": "item"}.get(name, "context")
        fields.append(FieldSpec(name, "categorical", owner, name, vocab=[str(i) for i in range(max(size, 1))]))
    return FeatureSpec(fields)


def compare(name: str, bench: Any, zoo_root: Path, feature_map_path: Path, batch: int, seed: int) -> dict:
    from fuxictr.features import FeatureMap

    from training.models.registry import get_ctr_model
    from training.run_benchmark import load_config

    hparams = dict(bench.MODELS[name]["hparams"], verbose=0, model_root=str(Path("/tmp") / "fuxictr_parity_ckpt"))
    feature_map = FeatureMap(feature_map_path.parent.name, str(feature_map_path.parent))
    feature_map.load(str(feature_map_path), hparams)
    zoo = _load_module(zoo_root / bench.MODELS[name]["fuxictr_zoo"] / "src" / "__init__.py", f"zoo_{name}")
    torch.manual_seed(seed)
    fx = getattr(zoo, name)(feature_map, gpu=-1, **hparams)
    spec = _encore_spec(feature_map)
    en = get_ctr_model(name)(spec, **load_config("frappe")["models"][name]["model"])

    # Move every weight and batch-norm statistic off its init so zero biases or unit variances hide nothing.
    with torch.no_grad():
        for key, t in fx.state_dict().items():
            if t.is_floating_point() and not SKIPPED.search(key):
                t.add_(0.1 * torch.randn_like(t)) if "running_var" not in key else t.uniform_(0.5, 1.5)
    mapped: dict[str, torch.Tensor] = {}
    for key, t in fx.state_dict().items():
        if SKIPPED.search(key) or not t.is_floating_point():  # counters and index buffers (AFM's pair index)
            continue
        target = None
        for pattern, repl in NAME_MAPS[name]:
            m = re.match(pattern, key)
            if m:
                if "{k}" in repl:  # CIN: FuxiCTR numbers its Conv1d layers from 1
                    repl = repl.replace("{k}", str(int(m.group(1)) - 1))
                target = re.sub(pattern, repl, key)
                break
        if target is None:
            raise SystemExit(f"{name}: no Encore name for FuxiCTR parameter {key}")
        mapped[target] = t
    bypassed = ("embedding.", "linear.", "gate1.tables", "gate2.tables")
    own = {k: v for k, v in en.state_dict().items() if not k.startswith(bypassed)}
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    missing, unused = sorted(set(own) - set(mapped)), sorted(set(mapped) - set(own))
    if missing or unused:
        raise SystemExit(f"{name}: Encore parameters without a FuxiCTR source {missing}; unmatched {unused}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(mapped[k].reshape(v.shape))  # Conv1d (out, in, 1) -> Linear; w_xy (H*X*Y, 1) -> (H, X, Y)

    n_fields, dim = len(spec.sparse_fields), hparams["embedding_dim"]
    emb = torch.randn(batch, n_fields, dim) * 0.5
    fx.embedding_layer, en.embedding = Constant(emb), Constant(emb)
    fx.get_inputs = lambda inputs, *a, **k: inputs
    if hasattr(fx, "lr_layer"):  # xDeepFM's first-order term: an embedding lookup too, zero on both sides
        fx.lr_layer, en.linear = Constant(torch.zeros(batch, 1)), Constant(torch.zeros(batch, 1))
    inputs = {"sparse": torch.zeros(batch, n_fields, dtype=torch.long)}
    if name == "FinalMLP":  # the gates' own context tables: the same context vectors on both sides
        for i, side in ((1, en.gate1), (2, en.gate2)):
            context = hparams[f"fs{i}_context"]
            if context:
                ctx = torch.randn(batch, len(context), dim) * 0.5
                setattr(fx.fs_module, f"fs{i}_ctx_emb", Constant(ctx))
                side.tables = nn.ModuleList(Constant(ctx[:, j]) for j in range(len(context)))
    # Compare logits, not probabilities: a saturated sigmoid would hide differences.
    fx.output_activation = nn.Identity()
    if name == "WuKong":  # its head MLP ends in FuxiCTR's output sigmoid
        fx.fc.mlp[-1] = nn.Identity()
    if name == "MaskNet":  # so does its mask net's head
        fx.mask_net.dnn.mlp[-1] = nn.Identity()
    fx.eval()
    en.eval()
    with torch.no_grad():
        z_fx = fx({})["y_pred"].squeeze(1)
        z_en = en(inputs)
    # Training takes other code where a model has a hand-written backward (AFM, xDeepFM): its forward too.
    z_train = en(inputs).detach()
    return {
        "max_rel_logit_diff": float(((z_fx - z_en).abs() / (1 + z_fx.abs())).max()),
        "max_rel_logit_diff_grad_path": float(((z_fx - z_train).abs() / (1 + z_fx.abs())).max()),
        "logit_std": float(z_fx.std()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(NAME_MAPS))
    p.add_argument("--fuxictr-src", type=Path, required=True, help="checkout of reczoo/FuxiCTR (model_zoo/)")
    p.add_argument("--feature-map", type=Path, required=True, help="FuxiCTR's feature_map.json for Frappe x1")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |dz| / (1 + |z|); float32 rounding is ~1e-5")
    args = p.parse_args(argv)
    bench = _load_module(REPO_ROOT / "benchmarks" / "ctr_vs_fuxictr.py", "ctr_vs_fuxictr")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in NAME_MAPS]
    if unknown:
        print(f"error: no name map for {unknown}; known: {', '.join(NAME_MAPS)}", file=sys.stderr)
        return 1
    zoo = args.fuxictr_src / "model_zoo"
    results = {m: compare(m, bench, zoo, args.feature_map, args.batch, args.seed) for m in models}
    print(json.dumps({"results": results, "batch": args.batch, "tolerance": args.tolerance}))

    def ok(r: dict) -> bool:
        worst = max(r["max_rel_logit_diff"], r["max_rel_logit_diff_grad_path"])
        return worst <= args.tolerance and r["logit_std"] > 1e-3

    for m, r in results.items():
        print(
            f"{m}: max |z_fuxictr - z_encore| / (1 + |z_fuxictr|) = {r['max_rel_logit_diff']:.2e}, "
            f"{r['max_rel_logit_diff_grad_path']:.2e} with grad enabled "
            f"(logit std {r['logit_std']:.3g}) {'ok' if ok(r) else 'MISMATCH'}"
        )
    bad = [m for m, r in results.items() if not ok(r)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
