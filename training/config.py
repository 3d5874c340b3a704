"""Benchmark configs for any data: a dataset's defaults, a named preset or a YAML/JSON file, then --set overrides.

Every layer has one layout, the one in training/configs/<dataset>.json:

    {"train": {TrainConfig field: value, ...},
     "models": {"DeepFM": {"model": {constructor option: value}, "train": {per-model TrainConfig overrides}}}}

Layers apply in this order, each deep-merged over the one before (a list replaces a list):
1. the dataset's config file (none for `taste` and other atomic-file data: an empty config);
2. `--preset NAME` (training/configs/presets/NAME.json; a dataset may name a default one: `--dataset taste`
   uses `taste`). A preset with `"_base": "frappe"` starts from training/configs/frappe.json instead of the
   dataset's config (`bars` does: today's Frappe settings whole); one without merges over the dataset's config;
3. `--config FILE` (.json, .yaml or .yml);
4. `--set KEY=VALUE`, repeatable. KEY is a dotted path: `train.lr=0.005`, `models.DeepFM.model.hidden_units=[256,256]`,
   `models.DCNv2.train.embedding_l2=1e-5`; `model.OPTION=V` / `train.OPTION=V` also work per model for every
   model selected with --models (`model.embedding_dim=32` sets it for each model whose constructor takes it).
   VALUE is read as YAML: numbers, true/false, [lists], strings.

`check_config` refuses a train key that TrainConfig lacks and a model option that the model's constructor
does not take, before any data is read.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from encore.errors import EncoreError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRESET_DIR = CONFIG_DIR / "presets"
# The preset a dataset uses when none is given (say so when it is used; no silent built-in defaults).
DATASET_PRESETS = {"taste": "taste"}


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key.startswith("_"):  # "_comment" and other notes stay in their own file
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)")


def _yaml(text: str) -> Any:
    """YAML with `1e-4` read as a number (PyYAML's YAML 1.1 wants `1.0e-4`)."""

    def numbers(value: Any) -> Any:
        if isinstance(value, str) and FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, list):
            return [numbers(v) for v in value]
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        return value

    return numbers(yaml.safe_load(text))


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise EncoreError(f"config file not found: {path}")
    try:
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise EncoreError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from exc
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise EncoreError(f"{path}: a config file ends in .json, .yaml or .yml")
    if not isinstance(doc, dict) or not set(doc) <= {"train", "models"} | {k for k in doc if k.startswith("_")}:
        raise EncoreError(f"{path}: a config is a mapping with 'train' and/or 'models' (got {type(doc).__name__})")
    return doc


def dataset_config(dataset: str) -> dict:
    path = CONFIG_DIR / f"{dataset}.json"
    return read_config_file(path) if path.exists() else {"train": {}, "models": {}}


def apply_preset(config: dict, name: str) -> dict:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise EncoreError(f"unknown preset {name!r}; known: {', '.join(presets())}")
    doc = read_config_file(path)
    base = dataset_config(doc["_base"]) if "_base" in doc else config
    return deep_merge(base, doc)


def parse_set(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise EncoreError(f"--set takes KEY=VALUE, got {item!r}")
    try:
        value = _yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise EncoreError(f"--set {key}: cannot read value {text!r} ({exc})") from exc
    return key.strip().split("."), value


def apply_set(config: dict, item: str, models: dict[str, set[str]]) -> dict:
    """One `--set` override. `model.X=V` sets X for every model in `models` (name -> the options its
    constructor takes) that takes X, and fails when none does."""
    path, value = parse_set(item)
    config = copy.deepcopy(config)
    if path[0] == "model" and len(path) == 2:
        taking = [name for name, takes in models.items() if path[1] in takes]
        if not taking:
            raise EncoreError(f"--set {item}: none of {', '.join(models)} takes {path[1]!r}")
        for name in taking:
            config.setdefault("models", {}).setdefault(name, {}).setdefault("model", {})[path[1]] = value
        return config
    if path[0] == "models" and (len(path) != 4 or path[2] not in ("model", "train")):
        raise EncoreError(f"--set {'.'.join(path)}: use models.<Model>.model.<option> or models.<Model>.train.<key>")
    if path[0] == "train" and len(path) != 2:
        raise EncoreError(f"--set {'.'.join(path)}: use train.<key>")
    if path[0] not in ("train", "models", "model"):
        raise EncoreError(f"--set {'.'.join(path)}: a key starts with train., model. or models.")
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return config


def model_options(model_classes: dict[str, type]) -> dict[str, set[str]]:
    """name -> the options its constructor takes (the spec aside)."""
    return {n: set(inspect.signature(c.__init__).parameters) - {"self", "spec"} for n, c in model_classes.items()}


def build_config(
    dataset: str,
    models: dict[str, set[str]],
    preset_name: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
) -> tuple[dict, list[str]]:
    """The effective config and the layers it came from, in order (for the log and the manifest)."""
    config = dataset_config(dataset)
    layers = [f"training/configs/{dataset}.json" if (CONFIG_DIR / f"{dataset}.json").exists() else "no dataset config"]
    preset_name = preset_name or DATASET_PRESETS.get(dataset)
    if preset_name:
        config = apply_preset(config, preset_name)
        layers.append(f"preset {preset_name}")
    if config_file is not None:
        config = deep_merge(config, read_config_file(config_file))
        layers.append(str(config_file))
    for item in overrides or []:
        config = apply_set(config, item, models)
        layers.append(f"--set {item}")
    config.setdefault("train", {})
    config.setdefault("models", {})
    return config, layers


def check_config(config: dict, model_classes: dict[str, type]) -> None:
    """Refuse unknown train keys and model options the constructors do not take (one readable line)."""
    from training.trainer import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(config.get("train", {})) - known)
    for name, entry in config.get("models", {}).items():
        bad += [f"models.{name}.train.{k}" for k in sorted(set(entry.get("train", {})) - known)]
    if bad:
        raise EncoreError(f"unknown training setting(s) {bad}; known: {', '.join(sorted(known))}")
    for name, takes in model_options(model_classes).items():
        options = config.get("models", {}).get(name, {}).get("model", {})
        unknown = sorted(set(options) - takes)
        if unknown:
            raise EncoreError(f"{name} does not take {unknown}; it takes {', '.join(sorted(takes)) or 'no options'}")
