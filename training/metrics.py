"""Binary CTR metrics: AUC and logloss from scikit-learn, plus impression-weighted per-user GAUC."""

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score


def binary_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """`scores` are probabilities. GAUC averages per-group AUC over groups that have both classes."""
    scores = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    out = {"auc": float(roc_auc_score(labels, scores)), "logloss": float(log_loss(labels, scores, labels=[0, 1]))}
    if groups is not None:
        out["gauc"] = gauc(labels, scores, groups)
    return out


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Mann-Whitney AUC per group from within-group average ranks, weighted by group size."""
    df = pd.DataFrame({"g": groups, "y": labels.astype(np.float64), "s": scores})
    df["rank"] = df.groupby("g")["s"].rank(method="average")
    per = df.groupby("g").agg(n=("y", "size"), pos=("y", "sum"))
    per["rank_pos"] = df[df.y == 1].groupby("g")["rank"].sum()
    per = per[(per.pos > 0) & (per.pos < per.n)]
    if per.empty:
        return float("nan")
    neg = per.n - per.pos
    auc = (per.rank_pos - per.pos * (per.pos + 1) / 2) / (per.pos * neg)
    return float(np.average(auc, weights=per.n))
