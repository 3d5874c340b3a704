"""Hyper-parameter search from the benchmark's entry point: Optuna TPE with median pruning on validation AUC.

    .venv/bin/python training/run_benchmark.py --dataset hetrec-lastfm-2k --features id+cat --models DCNv2 \
        --seeds 1 --tune 30 --out results/tune-dcnv2          # or --tune-minutes 60; both: whichever ends first

One study per (dataset, variant, features, content, model), stored in `<out>/tune.db` (SQLite): a re-run with
the same --out resumes it, and --tune N is the study's total number of finished trials, not N more. Each trial
trains the first --models entry with the first seed on the first --features / --content setting, from the
settings the other flags give (dataset config < --preset < --config < --set), with the trial's values drawn
from the search space (--tune-space, default training/configs/search.json) on top. Trials are early-stopped
and pruned on the valid split only: the test, cold and mixed sets are never evaluated here. The best trial's
settings are written to `<out>/best.json`, a config file for `--config`, so the tuned and default settings are
then compared over seeds with ordinary runs. `<out>/trials.csv` lists every trial.

Search space layout: {"train": {key: DIST}, "model": {option: DIST}}, DIST one of
{"low": a, "high": b} (float), {"low": a, "high": b, "log": true}, {"low": 1, "high": 8, "int": true} or
{"choices": [...]} (any JSON values, lists included). Model options the model does not take are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from encore.errors import EncoreError
from encore.io import write_text_atomic

DEFAULT_SPACE = Path(__file__).resolve().parent / "configs" / "search.json"


def suggest(trial, name: str, dist: dict):
    """One value from `dist` (see the module docstring)."""
    if "choices" in dist:
        encoded = [json.dumps(c) for c in dist["choices"]]  # Optuna's categoricals must be scalars
        return json.loads(trial.suggest_categorical(name, encoded))
    if "low" not in dist or "high" not in dist:
        raise EncoreError(f"search space {name}: give low and high, or choices")
    if dist.get("int"):
        return trial.suggest_int(name, int(dist["low"]), int(dist["high"]), log=bool(dist.get("log")))
    return trial.suggest_float(name, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log")))


def read_space(path: Path) -> dict:
    from training.config import read_config_file

    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        space = json.loads(path.read_text()) if path.suffix == ".json" else read_config_file(path)
    else:
        raise EncoreError(f"search space file not found or not .json/.yaml: {path}")
    unknown = set(space) - {"train", "model"} - {k for k in space if k.startswith("_")}
    if unknown:
        raise EncoreError(f"{path}: a search space has 'train' and 'model' sections, not {sorted(unknown)}")
    return space


def trial_config(trial, base: dict, space: dict, model: str, takes: set[str]) -> dict:
    """`base` with the trial's values: train keys on the model's own train settings, model options likewise."""
    config = copy.deepcopy(base)
    entry = config.setdefault("models", {}).setdefault(model, {})
    for key, dist in space.get("train", {}).items():
        entry.setdefault("train", {})[key] = suggest(trial, f"train.{key}", dist)
    for key, dist in space.get("model", {}).items():
        if key in takes:
            entry.setdefault("model", {})[key] = suggest(trial, f"model.{key}", dist)
    return config


def run_tune(args: argparse.Namespace) -> Path:
    import optuna

    from training.cell import Cell, EncodedData, GridSettings, fit_cell
    from training.config import check_config, model_options
    from training.datasets.registry import get_dataset
    from training.models.registry import get_ctr_model
    from training.run_benchmark import dataset_options, parse_seeds, settings, split_list

    if args.tune is not None and args.tune < 1:
        raise EncoreError("--tune must be >= 1 trials")
    if args.tune_minutes is not None and args.tune_minutes <= 0:
        raise EncoreError("--tune-minutes must be > 0")
    model_name = split_list(args.models, "--models")[0]
    seed = parse_seeds(args.seeds)[0]
    space = read_space(args.tune_space or DEFAULT_SPACE)
    dataset = get_dataset(args.dataset)
    options = dataset_options(args, dataset)
    if args.no_progress and "progress" in dataset.options:
        options["progress"] = False
    variant = dataset.variant(**options)
    features = split_list(args.features or dataset.default_features, "--features")[0]
    content = split_list(args.content or "none", "--content")[0]
    dataset.check_settings([features], [content])
    model_class = get_ctr_model(model_name)
    base = settings(args, {model_name: model_class})
    takes = model_options({model_name: model_class})[model_name]

    import torch

    torch.set_num_threads(args.threads)
    data = dataset.load(args.data_root or dataset.data_root(), features, content, **options)
    encoded = EncodedData.encode(data)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else None)

    def objective(trial) -> float:
        config = trial_config(trial, base, space, model_name, takes)
        check_config(config, {model_name: model_class})
        grid = GridSettings(config, epochs, args.threads, not args.no_progress, args.precision)
        cell = Cell.make(data, model_name, model_class, seed, grid)
        warmup = cell.train.warmup_epochs

        def report(log) -> None:
            trial.report(log.valid["auc"], log.epoch)
            if log.epoch > warmup and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {log.epoch}")

        _, fitted = fit_cell(cell, encoded, report)
        trial.set_user_attr("best_epoch", fitted.best_epoch)
        return float(fitted.best_valid["auc"])

    args.out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(args.out / 'tune.db').resolve()}"
    name = args.study or f"{args.dataset}_{variant}_{features}_{content}_{model_name}".replace("/", "_")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    done = [t for t in study.trials if t.state.is_finished()]
    remaining = None if args.tune is None else max(args.tune - len(done), 0)
    deadline = None if args.tune_minutes is None else args.tune_minutes * 60
    print(f"study {name}: {len(done)} finished trial(s) in {args.out / 'tune.db'}; running "
          f"{'up to ' + str(remaining) + ' more' if remaining is not None else 'until the time is up'}",
          file=sys.stderr)  # fmt: skip
    started = time.time()
    if remaining != 0:
        study.optimize(objective, n_trials=remaining, timeout=deadline, catch=())
    write_outputs(study, args.out, model_name, base)
    print(f"{len(study.trials)} trial(s) in {time.time() - started:.0f} s; best valid AUC "
          f"{study.best_value:.4f}: {args.out / 'best.json'}", file=sys.stderr)  # fmt: skip
    return args.out


def write_outputs(study, out: Path, model_name: str, base: dict) -> None:
    """best.json (a --config file holding the best trial's values) and trials.csv."""
    best = study.best_trial
    entry: dict = {}
    for key, value in best.params.items():
        section, option = key.split(".", 1)
        value = json.loads(value) if isinstance(value, str) else value
        entry.setdefault(section, {})[option] = value
    doc = {
        "_comment": f"Optuna study {study.study_name}: trial {best.number} of {len(study.trials)}, valid AUC "
        f"{best.value:.6f}, best epoch {best.user_attrs.get('best_epoch')}. Use with --config.",
        "models": {model_name: entry},
    }
    write_text_atomic(out / "best.json", json.dumps(doc, indent=2) + "\n")
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    write_text_atomic(out / "trials.csv", frame.to_csv(index=False))
