"""The evaluation protocol for implicit play data (TASTE's, with its leaks fixed).

Label = num_repeat >= threshold; k-core; per-user random 80/10/10 (or temporal) split; optional cold items
withheld from training; one uniform never-interacted item per observed row as a negative. Training
negatives are redrawn every epoch by a sampler; eval negatives are drawn once, each set with its own RNG,
and saved as parquet whose sha256 goes into the run manifest.

What "never interacted" excludes differs by side. An eval negative is never any item the user played in the
whole log, so it is never a held-out positive. A training negative, by default (`train_negatives="train"`),
excludes only the user's training rows: excluding the valid, test and cold plays too (TASTE's convention,
`train_negatives="all"`, the rule every grid in docs/benchmarks.md ran under) lets held-out plays shape the
training rows, which breaks "fit on train only" (0.57% of synthetic and 0.26% of HetRec training negatives
would have been held-out positives). Any dataset with (user, item, num_repeat)
rows plugs in through `apply_protocol`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from encore.errors import EncoreError
from encore.io import sha256_file, write_bytes_atomic
from encore.schema import FieldConfig
from training.datasets.base import ITEM, USER, DatasetSplits, step_record
from training.datasets.oracle import EvalSet, GenerativeTruth, exact_scores

LABEL = "label"
EVAL_SETS = ("valid", "test", "cold")
ORACLE_CACHE, ORACLE_VERSION = "oracle.npz", "exact-1"


@dataclass(frozen=True)
class ProtocolConfig:
    label_threshold: int = 2
    negatives: int = 1  # uniform never-interacted items per observed row
    kcore: int = 5  # users and items with fewer observed rows are dropped, repeatedly
    split: Literal["random", "temporal"] = "random"
    valid_share: float = 0.1
    test_share: float = 0.1
    cold_share: float = 0.0  # share of items withheld from training (TASTE's cold variant: 0.2)
    seed: int = 2020  # TASTE's split seed; model seeds are separate
    # What training negatives exclude: "train" the user's training rows only; "all" every play (TASTE's rule).
    train_negatives: Literal["train", "all"] = "train"

    def tag(self) -> str:
        """Short, readable name of the setting for result tables; the hash covers every field."""
        parts = [self.split]
        if self.cold_share > 0:
            parts.append(f"cold{round(self.cold_share * 100)}")
        defaults = ProtocolConfig()
        for name, short in (("label_threshold", "t"), ("negatives", "neg"), ("kcore", "k"), ("seed", "s")):
            if getattr(self, name) != getattr(defaults, name):
                parts.append(f"{short}{getattr(self, name)}")
        if self.train_negatives != defaults.train_negatives:
            parts.append(f"trainneg-{self.train_negatives}")
        return "+".join(parts)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ProtocolSplits:
    """Bare (user, item, label[, oracle]) rows; the dataset joins its features onto them."""

    train_positives: pd.DataFrame  # every observed training row (label 0 or 1), no negatives
    evals: dict[str, pd.DataFrame]  # valid, test (+ cold, mixed): observed rows + frozen negatives
    sampler: NegativeSampler
    train_items: np.ndarray  # items with at least one observed training row
    cold_items: np.ndarray
    oracle_auc: dict[str, float]
    files: dict[str, str]  # frozen eval files -> sha256
    steps: list[dict] = field(default_factory=list)  # counts and checksum after every step, for the manifest


def kcore(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k rows until none is left (the usual iterative k-core)."""
    if k <= 1:
        return rows
    while True:
        user_n = rows.groupby(USER)[ITEM].transform("size")
        item_n = rows.groupby(ITEM)[USER].transform("size")
        keep = (user_n >= k) & (item_n >= k)
        if keep.all():
            return rows.reset_index(drop=True)
        rows = rows[keep]
        if rows.empty:
            raise EncoreError(f"the {k}-core of the data is empty; use a smaller --kcore")


def split_rows(rows: pd.DataFrame, cfg: ProtocolConfig, rng: np.random.Generator) -> pd.Series:
    """'train' / 'valid' / 'test' per row: per user, in random or timestamp order (RecBole's ratio split)."""
    if cfg.split == "random":
        order_key = rng.random(len(rows))
    elif cfg.split == "temporal":
        if "timestamp" not in rows.columns:
            raise EncoreError(f"the temporal split needs a timestamp column; columns are {list(rows.columns)}")
        order_key = rows["timestamp"].to_numpy(dtype=np.float64)
    else:
        raise EncoreError(f"unknown split {cfg.split!r}; known: random, temporal")
    frame = pd.DataFrame({"u": rows[USER].to_numpy(), "key": order_key, "pos": np.arange(len(rows))})
    frame = frame.sort_values(["u", "key"], kind="stable")
    rank = frame.groupby("u").cumcount().to_numpy()
    size = frame.groupby("u")["u"].transform("size").to_numpy()
    n_valid = np.floor(size * cfg.valid_share).astype(int)
    n_test = np.floor(size * cfg.test_share).astype(int)
    # The last rows in the order go to test, the ones before them to valid (latest last when temporal).
    labels = np.where(rank >= size - n_test, "test", np.where(rank >= size - n_test - n_valid, "valid", "train"))
    out = np.empty(len(rows), dtype=object)
    out[frame["pos"].to_numpy()] = labels
    return pd.Series(out, index=rows.index)


class NegativeSampler:
    """Uniform negatives from `pool` that the user never interacted with, vectorized with rejection."""

    def __init__(self, positives: pd.DataFrame, pool: np.ndarray, interacted: pd.DataFrame, n_neg: int, seed: int):
        self.positives = positives[[USER, ITEM, LABEL]].reset_index(drop=True)
        self.pool = np.sort(np.asarray(pool, dtype=np.int64))
        self.n_neg = n_neg
        self.seed = seed
        self._stride = int(max(interacted[ITEM].max(), self.pool.max(), 0)) + 1
        self._seen = np.unique(interacted[USER].to_numpy(np.int64) * self._stride + interacted[ITEM].to_numpy(np.int64))

    def draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One never-interacted pool item per entry of `users`."""
        items = self.pool[rng.integers(0, len(self.pool), len(users))]
        bad = self._is_seen(users, items)
        for _ in range(1000):
            if not bad.any():
                return items
            items[bad] = self.pool[rng.integers(0, len(self.pool), int(bad.sum()))]
            bad[bad] = self._is_seen(users[bad], items[bad])
        raise EncoreError("negative sampling failed: some users have interacted with (nearly) every pool item")

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self._stride + items
        idx = np.minimum(np.searchsorted(self._seen, keys), len(self._seen) - 1)
        return self._seen[idx] == keys

    def rows(self, rng: np.random.Generator) -> pd.DataFrame:
        """The positives plus n_neg fresh negatives per row (label 0), positives first."""
        users = np.repeat(self.positives[USER].to_numpy(np.int64), self.n_neg)
        negatives = pd.DataFrame({USER: users, ITEM: self.draw(users, rng), LABEL: 0})
        return pd.concat([self.positives, negatives], ignore_index=True)

    def __call__(self, epoch: int, seed: int = 0) -> pd.DataFrame:
        """Training rows for `epoch` of the run with model seed `seed`: same (epoch, seed), same rows."""
        return self.rows(np.random.default_rng([self.seed, seed, epoch]))


def apply_protocol(
    plays: pd.DataFrame,
    cfg: ProtocolConfig,
    out_dir: Path | None = None,
    truth: GenerativeTruth | None = None,
) -> ProtocolSplits:
    """Label, filter, split, withhold cold items and freeze eval negatives (saved under out_dir)."""
    missing = [c for c in (USER, ITEM, "num_repeat") if c not in plays.columns]
    if missing:
        raise EncoreError(f"plays: missing column(s) {missing}; known columns are {list(plays.columns)}")
    bad = not 0 <= cfg.cold_share < 1 or cfg.negatives < 1 or cfg.label_threshold < 1
    if bad or cfg.train_negatives not in ("train", "all"):
        raise EncoreError(f"bad protocol settings: {cfg}")
    steps = [step_record("input", plays)]
    rows = kcore(plays.drop_duplicates([USER, ITEM]).reset_index(drop=True), cfg.kcore)
    steps.append(step_record(f"dedup+{cfg.kcore}-core", rows))
    rows[LABEL] = (rows["num_repeat"] >= cfg.label_threshold).astype(np.int64)
    rng = np.random.default_rng([cfg.seed, 0])

    items = np.sort(rows[ITEM].unique())
    n_cold = int(round(cfg.cold_share * len(items)))
    cold_items = np.sort(rng.choice(items, n_cold, replace=False)) if n_cold else np.array([], dtype=np.int64)
    is_cold = rows[ITEM].isin(cold_items).to_numpy()
    warm = rows[~is_cold].reset_index(drop=True)
    warm_part = split_rows(warm, cfg, rng)
    parts = {name: warm[warm_part == name].reset_index(drop=True) for name in ("train", "valid", "test")}
    if n_cold:
        parts["cold"] = rows[is_cold].reset_index(drop=True)
    steps += [step_record(f"split:{name}", part) for name, part in parts.items()]
    train_items = np.sort(parts["train"][ITEM].unique())
    warm_items = np.setdiff1d(items, cold_items)

    # "Never interacted" means in all the data (TASTE), so an eval negative is never a held-out positive.
    interacted = plays[[USER, ITEM]]
    evals, oracle, files = {}, {}, {}
    shares = {"valid": cfg.valid_share, "test": cfg.test_share, "cold": None}
    for index, name in enumerate(EVAL_SETS):
        if name not in parts:
            continue
        pool = cold_items if name == "cold" else warm_items
        sampler = NegativeSampler(parts[name], pool, interacted, cfg.negatives, 0)
        evals[name] = sampler.rows(np.random.default_rng([cfg.seed, 100 + index]))  # its own RNG per eval set
    if truth is not None:
        _add_oracle(evals, truth, shares, cold_items, warm_items, cfg.negatives, out_dir)
    if n_cold:
        evals["mixed"] = pd.concat([evals["test"], evals["cold"]], ignore_index=True)  # TASTE's warm+cold set
    for name, frame in evals.items():
        steps.append(step_record(f"eval:{name}+negatives", frame))
        if "oracle" in frame.columns:
            oracle[name] = float(roc_auc_score(frame[LABEL], frame["oracle"]))
        if out_dir is not None:
            files[str(out_dir / f"{name}.parquet")] = _save_frozen(frame, out_dir / f"{name}.parquet")

    # Training negatives exclude the user's training rows only, unless TASTE's rule is asked for (module doc).
    excluded = interacted if cfg.train_negatives == "all" else parts["train"][[USER, ITEM]]
    sampler = NegativeSampler(parts["train"], train_items, excluded, cfg.negatives, cfg.seed)
    return ProtocolSplits(parts["train"], evals, sampler, train_items, cold_items, oracle, files, steps)


def _add_oracle(evals, truth, shares, cold_items, warm_items, n_neg, out_dir: Path | None) -> None:
    """The exact Bayes score of every eval row (training/datasets/oracle.py) as its "oracle" column.

    It takes minutes on the default world, so it is kept in out_dir/oracle.npz, keyed by each set's rows."""
    keys = {name: _rows_key(frame) for name, frame in evals.items()}
    cache = out_dir / ORACLE_CACHE if out_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as npz:
            if all(f"key_{name}" in npz.files and str(npz[f"key_{name}"]) == key for name, key in keys.items()):
                for name, frame in evals.items():
                    frame["oracle"] = npz[f"score_{name}"]
                return
    sets = {
        name: EvalSet(frame, cold_items if name == "cold" else warm_items, shares[name])
        for name, frame in evals.items()
    }
    scores = exact_scores(truth, sets, n_neg).scores
    for name, frame in evals.items():
        frame["oracle"] = scores[name]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"score_{name}": scores[name] for name in evals} | {f"key_{n}": np.array(k) for n, k in keys.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(cache, buffer.getvalue())


def _rows_key(frame: pd.DataFrame) -> str:
    """sha256 of a set's (user, item) rows and the oracle's version: the cache is valid for these rows only."""
    digest = hashlib.sha256(ORACLE_VERSION.encode())
    digest.update(frame[USER].to_numpy(np.int64).tobytes() + frame[ITEM].to_numpy(np.int64).tobytes())
    return digest.hexdigest()


def _save_frozen(frame: pd.DataFrame, path: Path) -> str:
    """Write the frozen rows (parquet) unless an identical file is already there; returns its sha256."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    if not (path.exists() and sha256_file(path) == digest):
        write_bytes_atomic(path, data)
    return digest


def joined_dataset(
    name: str,
    splits: ProtocolSplits,
    users: pd.DataFrame,
    items: pd.DataFrame,
    fields: list[FieldConfig],
    *,
    features: str,
    content: str,
    files: dict[str, str],
    variant: str,
    run_files: dict[str, Path],
) -> DatasetSplits:
    """DatasetSplits of protocol rows with the user and item tables joined on (training rows per epoch too)."""

    def decorate(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.merge(users, on=USER, how="left").merge(items, on=ITEM, how="left")

    evals = {split: decorate(frame) for split, frame in splits.evals.items()}
    return DatasetSplits(
        name,
        decorate(splits.sampler(1, 0)),
        evals.pop("valid"),
        evals.pop("test"),
        fields,
        LABEL,
        group_column=USER,
        features=features,
        content=content,
        files=files,
        extra_eval=evals,
        variant=variant,
        oracle_auc=dict(splits.oracle_auc),
        train_sampler=lambda epoch, seed: decorate(splits.sampler(epoch, seed)),
        run_files=run_files,
        steps=splits.steps,
    )
