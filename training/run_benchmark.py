"""Benchmark entry point: train CTR models on a dataset over several seeds; write results.csv and results.md.

    .venv/bin/python training/run_benchmark.py --dataset frappe --models LR,FM,DeepFM,DCNv2,MaskNet \
        --seeds 2021 --out results/frappe
    .venv/bin/python training/run_benchmark.py --dataset synthetic --features id,id+cat,id+cat+num \
        --content none,dense,tokens --models DeepFM,DCNv2,MaskNet --seeds 1,2,3 --out results/synthetic --cold

--features and --content are comma lists: every (features, content, model, seed) cell is one run.
--cold withholds 20% of the items from training and adds the pure-cold and mixed test sets; --quick
trains a tiny world for two epochs (tests and smoke runs).

--task recall trains recall models instead (training/recall_benchmark.py):
    .venv/bin/python training/run_benchmark.py --task recall --dataset synthetic \
        --models BPR,VBPR,FREEDOM,LGMRec --seeds 1,2,3 --threads 1 --out results/recall-synthetic

Settings for any data (training/config.py): the dataset's config file, then --preset bars|taste, then
--config FILE (YAML or JSON), then --set KEY=VALUE overrides, e.g.
    .venv/bin/python training/run_benchmark.py --dataset hetrec-lastfm-2k --features id+cat --models DCNv2 \
        --preset taste --set train.lr=0.001 --set models.DCNv2.model.hidden_units=[128,128] --out results/x
--tune N searches the first model's settings with Optuna on validation AUC (training/tune.py).

Data-parallel (training/distributed.py): the same command under torchrun trains each cell on every rank's
shard of the rows (gloo on CPU); rank 0 alone evaluates and writes the results and run folders:
    torchrun --standalone --nproc_per_node=2 training/run_benchmark.py --dataset frappe --models DeepFM \
        --seeds 2021 --out DIR
The recall task too (training/recall_loop.py: every rank the whole graph, the BPR pairs split):
    torchrun --standalone --nproc_per_node=2 training/run_benchmark.py --task recall --dataset synthetic \
        --models BPR,FREEDOM --seeds 1 --out DIR
`--device cuda` trains on the GPU (NCCL under torchrun, one GPU per local rank).

Data larger than memory: `--stream` reads the training rows row group by row group (each rank its own), e.g.
on Frappe-shaped data of any size from `python -m training.datasets.frappe_synth --rows 20000000 --out DIR`:
    .venv/bin/python training/run_benchmark.py --dataset frappe-synth --data-root DIR --models DeepFM \
        --seeds 2021 --stream --out DIR

Each finished run also leaves `<out>/runs/<run-id>/` with the feature spec, the ONNX model, the weights
(safetensors) and a manifest (config, data hashes, metrics, timings, library versions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from encore.errors import EncoreError

if TYPE_CHECKING:
    from training.datasets.dataset import Dataset

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--task",
        choices=["ctr", "recall"],
        default="ctr",
        help="ctr: click models (AUC); recall: BPR/VBPR/FREEDOM/LGMRec, full ranking (training/recall_benchmark.py)",
    )
    p.add_argument("--dataset", required=True, help="dataset name, e.g. frappe")
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. DeepFM,DCNv2")
    p.add_argument("--seeds", default="2021", help="comma-separated integer seeds")
    p.add_argument("--features", default=None, help="comma list of feature settings (frappe: all; synthetic: id,...)")
    p.add_argument(
        "--content",
        default=None,
        help="comma list of content settings: none,dense,tokens (ctr default none; recall: the modalities, "
        "default dense on synthetic, text-dense,dense on hetrec-lastfm-2k)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for results.csv/results.md/runs")
    p.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default ../shared/data)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads per rank (default: the cores / local ranks)"
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: CPU autocast of the forward pass (weights, optimizer, loss, evaluation stay fp32)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training forward pass (faster for some models, slower for others: "
        "docs/performance.md); the first steps of each batch shape pay the compilation",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the maximum number of epochs")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda / cuda:N: the model and batches on the GPU (torchrun: NCCL, one GPU per local rank)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--stream",
        action="store_true",
        help="stream the training rows from parquet row groups, each rank its own (training/streaming.py; "
        "frappe-synth); valid and test stay in memory",
    )
    c = p.add_argument_group("settings (training/config.py; applied in this order)")
    c.add_argument(
        "--preset",
        default=None,
        help="named settings: bars (today's Frappe/BARS settings whole) or taste (TASTE's lr 0.005, batch 2048, "
        "patience 10, per-model embedding sizes; --dataset taste uses it unless another is named)",
    )
    c.add_argument("--config", type=Path, default=None, help="YAML or JSON file: {train: {...}, models: {M: ...}}")
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, repeatable: train.lr=0.005, models.DeepFM.model.hidden_units=[256,256], "
        "model.embedding_dim=32 (every selected model that takes it)",
    )
    o = p.add_argument_group("hyper-parameter search (training/tune.py; Optuna TPE, pruning on valid AUC)")
    o.add_argument("--tune", type=int, default=None, metavar="TRIALS", help="search with this many trials")
    o.add_argument("--tune-minutes", type=float, default=None, help="or stop the search after this many minutes")
    o.add_argument("--tune-space", type=Path, default=None, help="search space (default training/configs/search.json)")
    o.add_argument("--study", default=None, help="study name (default: dataset_features_content_model)")
    g = p.add_argument_group("generated and implicit-feedback datasets (synthetic)")
    g.add_argument("--cold", action="store_true", help="withhold 20%% of items; report pure-cold and mixed sets")
    g.add_argument("--quick", action="store_true", help="tiny world, at most 2 epochs: a fast end-to-end check")
    g.add_argument("--size", default=None, help="world size: quick, small, default, large")
    g.add_argument("--world-seed", type=int, default=None, help="seed of the generated world")
    g.add_argument("--split", default=None, choices=["random", "temporal"], help="per-user split order")
    g.add_argument("--label-threshold", type=int, default=None, help="label = num_repeat >= N (default 2; hetrec 250)")
    g.add_argument("--negatives", type=int, default=None, help="negatives per observed row (default 1)")
    g.add_argument("--kcore", type=int, default=None, help="k-core filter (default 5)")
    g.add_argument(
        "--train-negatives",
        default=None,
        choices=["train", "all"],
        help="what training negatives exclude: train (default) the user's training rows only; all every play, "
        "held-out ones included (TASTE's rule, the committed grids'); eval negatives always exclude every play",
    )
    g.add_argument("--missing-content", default=None, choices=["error", "zeros"], help="items without content")
    g.add_argument("--encoder", default=None, help="audio encoder for content (default mfcc)")
    g.add_argument("--token-k", type=int, default=None, help="--content tokens: centroids per codebook (default 32)")
    g.add_argument(
        "--token-layers",
        default=None,
        help="--content tokens: layers that get token fields: all (default), lastN (the N deepest, e.g. last1, "
        "last3) or indices (0,2,-1); saved in the codebooks so serving tokenizes the same layers",
    )
    r = p.add_argument_group("recall task (--task recall)")
    r.add_argument("--cold-share", type=float, default=0.2, help="share of items withheld as cold items (default 0.2)")
    r.add_argument("--patience", type=int, default=10, help="epochs without valid recall@20 gain before stopping")
    r.add_argument(
        "--batch-size", type=int, default=None, help="global batch of training triples (default 2048), split over ranks"
    )
    t = p.add_argument_group("TASTE / RecBole atomic files (--dataset taste; --data-root is the dataset folder)")
    t.add_argument("--inter-fields", default=None, help="user,item,count columns of the .inter file")
    t.add_argument("--columns", default=None, help="comma list of the .user/.item feature columns to use (default all)")
    t.add_argument("--content-file", default=None, help="content file in <folder>/content/ (needed if several)")
    return p.parse_args(argv)


def split_list(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EncoreError(f"{flag} is empty")
    return items


def dataset_options(args: argparse.Namespace, dataset: Dataset) -> dict:
    """Loader options from the flags that were given (a dataset refuses options it does not take)."""
    options: dict = {}
    protocol = {
        "split": args.split,
        "label_threshold": args.label_threshold,
        "negatives": args.negatives,
        "kcore": args.kcore,
        "train_negatives": args.train_negatives,
        "cold_share": 0.2 if args.cold else None,
    }
    protocol = {k: v for k, v in protocol.items() if v is not None}
    if protocol:
        options["protocol"] = replace(dataset.default_protocol, **protocol)
    size = args.size or ("quick" if args.quick else None)
    for key, value in (
        ("size", size),
        ("world_seed", args.world_seed),
        ("missing", args.missing_content),
        ("encoder", args.encoder),
        ("k", args.token_k),
        ("token_layers", args.token_layers),
        ("inter_fields", split_list(args.inter_fields, "--inter-fields") if args.inter_fields else None),
        ("columns", args.columns),
        ("content_file", args.content_file),
    ):
        if value is not None:
            options[key] = value
    return options


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise EncoreError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise EncoreError("--seeds is empty")
    return seeds


def load_config(dataset: str) -> dict:
    path = CONFIG_DIR / f"{dataset}.json"
    return json.loads(path.read_text()) if path.exists() else {"train": {}, "models": {}}


def settings(args: argparse.Namespace, model_classes: dict) -> dict:
    """The effective config from the dataset's file, the preset, --config and --set (logged, then checked)."""
    from training.config import build_config, check_config, model_options

    config, layers = build_config(args.dataset, model_options(model_classes), args.preset, args.config, args.overrides)
    check_config(config, model_classes)
    from training.distributed import launched_rank

    if launched_rank() == 0:  # stdout: stderr's last line stays the error, if any
        print(f"settings: {' < '.join(layers)}", flush=True)
    return config


def run(args: argparse.Namespace) -> Path:
    # Validate everything cheap before touching data or importing torch.
    model_names = split_list(args.models, "--models")
    seeds = parse_seeds(args.seeds)
    from training.datasets.registry import get_dataset

    dataset = get_dataset(args.dataset)
    options = dataset_options(args, dataset)
    if args.stream:  # a dataset that cannot stream refuses the option
        options["stream"] = True
    if args.no_progress and "progress" in dataset.options:
        options["progress"] = False
    variant = dataset.variant(**options)
    feature_list = split_list(args.features or dataset.default_features, "--features")
    content_list = split_list(args.content or "none", "--content")
    dataset.check_settings(feature_list, content_list)
    if args.threads is not None and args.threads < 1:
        raise EncoreError("--threads must be >= 1")

    import torch

    from training import distributed

    dist = distributed.context(args.device)  # joins the torchrun group when launched by torchrun; one rank otherwise
    if args.threads is None:
        args.threads = dist.threads()

    from training.cell import GridSettings
    from training.models.registry import get_ctr_model
    from training.results import ResultsTable

    model_classes = {name: get_ctr_model(name) for name in model_names}
    if not model_classes:
        raise EncoreError("--models is empty")
    torch.set_num_threads(args.threads)
    data_root = args.data_root or dataset.data_root()
    config = settings(args, model_classes)
    results = ResultsTable(args.out)
    reference = {m: c["bars_test_auc"] for m, c in config["models"].items() if "bars_test_auc" in c}
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else None)
    grid = GridSettings(
        config, epochs, args.threads, not args.no_progress and dist.is_main, args.precision, args.device, args.compile
    )
    try:
        for features in feature_list:
            for content in content_list:
                todo = cells_to_run(results, args.dataset, variant, features, content, list(model_classes), seeds)
                if todo:  # else nothing to train: do not even load the data
                    data = dataset.load(data_root, features, content, **options)
                    run_cells(data, todo, model_classes, grid, results, reference, dist)
    finally:
        distributed.shutdown()
    return args.out


def cells_to_run(results, dataset: str, variant: str, features: str, content: str, models: list[str],
                 seeds: list[int]) -> list[tuple[str, int]]:  # fmt: skip
    """The (model, seed) cells of one setting that results.csv does not hold yet; the others are reported."""
    todo = []
    for name in models:
        for seed in seeds:
            if results.done(dataset, name, features, content, seed, variant):
                print(f"skip {features}/{content} {name} seed {seed}: already in {results.csv_path}", file=sys.stderr)
            else:
                todo.append((name, seed))
    return todo


def run_cells(data, todo, model_classes, grid, results, reference=None, dist=None) -> None:
    """Train the (model, seed) cells in `todo` on one loaded dataset setting; the features are encoded once.

    Each cell's run folder is saved and its rows written before the next cell starts, so an interrupted grid
    keeps every finished cell. Data-parallel, every rank trains and rank 0 alone writes."""
    from training.cell import Cell, EncodedData, result_rows, save_run, summary_line, train_cell

    encoded = EncodedData.encode(data)
    runs_dir = results.out_dir / "runs"
    for name, seed in todo:
        result = train_cell(Cell.make(data, name, model_classes[name], seed, grid), encoded, dist)
        if not result.dist.is_main:
            continue
        run_dir = save_run(result, encoded.spec, runs_dir)
        results.add(result_rows(result, run_dir))
        results.write(reference or None)
        print(summary_line(result), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from training.distributed import launched_rank, launched_world_size

    args = parse_args(argv)
    try:
        ctr_only = args.preset or args.config or args.overrides or args.tune is not None or args.tune_minutes
        if args.task == "recall" and ctr_only:
            raise EncoreError("--preset, --config, --set and --tune apply to --task ctr only")
        if args.task == "recall" and args.precision != "fp32":  # sparse graph products have no bf16 kernels
            raise EncoreError("--precision applies to --task ctr; the recall models train in fp32")
        if args.task == "ctr" and args.batch_size is not None:
            raise EncoreError("--batch-size applies to --task recall; the ctr task takes --set train.batch_size=N")
        if args.tune is not None or args.tune_minutes is not None:
            from training.tune import run_tune

            if launched_world_size() > 1:
                raise EncoreError("--tune does not run data-parallel: launch it without torchrun")
            if args.threads is None:
                args.threads = os.cpu_count() or 1
            out = run_tune(args)
            print(f"search in {out / 'tune.db'}; best settings in {out / 'best.json'}")
            return 0
        if args.task == "recall":
            from training.recall_benchmark import run_recall

            out = run_recall(args)  # --threads None: the cores / local ranks
        else:
            out = run(args)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if launched_rank() == 0:  # torchrun: rank 0 alone reports
        print(f"results in {out / 'results.csv'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
