"""Binary CTR metrics: AUC and logloss from scikit-learn, plus impression-weighted per-user GAUC.

`per_group_auc` keeps the per-user AUCs behind GAUC; a run folder stores them (PER_USER_FILE) so that a
bootstrap over users can put a confidence interval on a GAUC difference (training/significance.py).
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

PER_USER_FILE = "per_user_auc.npz"


def binary_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """`scores` are probabilities. GAUC averages per-group AUC over groups that have both classes."""
    return binary_metrics_per_user(labels, scores, groups)[0]


def binary_metrics_per_user(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """`binary_metrics` and, with `groups`, the per-group AUC table its GAUC averages (computed once)."""
    scores = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    out = {"auc": float(roc_auc_score(labels, scores)), "logloss": float(log_loss(labels, scores, labels=[0, 1]))}
    if groups is None:
        return out, None
    per = per_group_auc(labels, scores, groups)
    out["gauc"] = weighted_gauc(per)
    return out, per


def per_group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Mann-Whitney AUC per group from within-group average ranks: columns group, weight (rows), auc.
    Groups with a single class have no AUC and are left out."""
    df = pd.DataFrame({"g": groups, "y": labels.astype(np.float64), "s": scores})
    df["rank"] = df.groupby("g")["s"].rank(method="average")
    per = df.groupby("g").agg(n=("y", "size"), pos=("y", "sum"))
    per["rank_pos"] = df[df.y == 1].groupby("g")["rank"].sum()
    per = per[(per.pos > 0) & (per.pos < per.n)]
    neg = per.n - per.pos
    auc = (per.rank_pos - per.pos * (per.pos + 1) / 2) / (per.pos * neg)
    return pd.DataFrame({"group": per.index.to_numpy(), "weight": per.n.to_numpy(), "auc": auc.to_numpy()})


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Per-group AUC averaged over groups, weighted by group size."""
    return weighted_gauc(per_group_auc(labels, scores, groups))


def weighted_gauc(per: pd.DataFrame) -> float:
    """The per-group AUCs of `per_group_auc` averaged with the groups' row counts as weights (NaN if none)."""
    return float(np.average(per.auc, weights=per.weight)) if len(per) else float("nan")


def save_per_user(path: Path, per_split: dict[str, pd.DataFrame]) -> None:
    """One long table (split, user, weight, auc) as plain arrays in an .npz: no pickled objects."""
    frames = [frame.assign(split=split) for split, frame in per_split.items()]
    table = pd.concat(frames, ignore_index=True)
    np.savez_compressed(
        path,
        split=table.split.to_numpy(dtype=str),
        user=table.group.to_numpy(dtype=str),
        weight=table.weight.to_numpy(dtype=np.int64),
        auc=table.auc.to_numpy(dtype=np.float64),
    )


def load_per_user(path: Path) -> pd.DataFrame:
    """The table save_per_user wrote: columns split, user (str), weight, auc."""
    with np.load(path, allow_pickle=False) as data:
        return pd.DataFrame({k: data[k] for k in ("split", "user", "weight", "auc")})
