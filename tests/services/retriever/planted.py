"""A small play log with a planted taste structure that BPR should find and content should explain.

Items belong to clusters ("genres"); an item's content vector is its cluster's centroid plus noise, so the
content-to-item projection can place an unseen item near its cluster. Each user likes one or two
clusters and plays mostly from them, popular items more often.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ENCODER = {"encoder": "mfcc", "encoder_revision": "test-1"}


@dataclass(frozen=True)
class Planted:
    interactions: pd.DataFrame  # user_id, track_id
    track_ids: list[str]
    content: np.ndarray  # (n_items, content_dim) float32, rows in track_ids order
    item_cluster: np.ndarray  # (n_items,)
    user_clusters: dict[str, set[int]]
    centroids: np.ndarray  # (n_clusters, content_dim)

    def content_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.track_ids, self.content, strict=True))


def make_planted(
    n_users: int = 300,
    n_items: int = 600,
    n_clusters: int = 8,
    content_dim: int = 16,
    plays_per_user: int = 30,
    in_taste: float = 0.9,
    seed: int = 0,
) -> Planted:
    rng = np.random.default_rng(seed)
    track_ids = [f"t{i:05d}" for i in range(n_items)]
    item_cluster = rng.integers(0, n_clusters, n_items)
    centroids = rng.normal(0.0, 2.0, (n_clusters, content_dim))
    content = (centroids[item_cluster] + rng.normal(0.0, 1.0, (n_items, content_dim))).astype(np.float32)
    weight = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.7  # Zipf-like popularity, independent of cluster
    rows, user_clusters = [], {}
    for u in range(n_users):
        user_id = f"u{u:04d}"
        liked = set(rng.choice(n_clusters, int(rng.integers(1, 3)), replace=False).tolist())
        user_clusters[user_id] = liked
        in_liked = np.isin(item_cluster, list(liked))
        p = weight * np.where(in_liked, in_taste / weight[in_liked].sum(), (1 - in_taste) / weight[~in_liked].sum())
        n = int(rng.integers(plays_per_user // 2, plays_per_user * 3 // 2 + 1))
        for i in rng.choice(n_items, n, replace=False, p=p / p.sum()):
            rows.append((user_id, track_ids[i]))
    interactions = pd.DataFrame(rows, columns=["user_id", "track_id"])
    return Planted(interactions, track_ids, content, item_cluster, user_clusters, centroids)
