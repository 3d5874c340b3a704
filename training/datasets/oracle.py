"""The Bayes score of a generated world's evaluation row, computed exactly (up to a checked quadrature).

The world draws a user's n plays without replacement in proportion to exposure weights w (Gumbel top-n). That
is the exponential race: item j arrives at an Exp(w_j) time and the plays S are the first n arrivals. An
evaluation set with pool P (the warm items for valid and test, the cold items for cold) then holds, for a user
with K = |S ∩ P| plays in the pool, m(K) of them as rows (floor(share * K) for valid and test, all K for cold)
and n_neg * m(K) negatives drawn uniformly, with replacement, from the |P| - K pool items the user never played.
The expected numbers of rows of (u, i) that are plays and that are negatives are therefore

    A = E[1{i in S} m(K) / K]          B = E[1{i not in S} n_neg m(K) / (|P| - K)]

and the Bayes score of a row is P(label | played) * A / (A + B), the ratio of expected positive rows to expected
rows of that (user, item). Both expectations condition on i's race against the others. With tau the n-th
arrival among the others and a the pool plays among the first n - 1 of them:

    A = integral (1 - e^{-w_i t}) sum_a g(1 + a) [D_P(a) q_O(n-1-a) + q_P(a) D_O(n-1-a)] dt
    B = integral e^{-w_i t} sum_a [D_P(a) q_O(n-1-a) h(a + 1) + q_P(a) D_O(n-1-a) h(a)] dt

with g(k) = m(k) / k, h(k) = n_neg m(k) / (|P| - k), q_G(a; t) the probability that exactly a of group G's items
(the pool without i, or every other item O) arrived by t, and D_G(a; t) = sum_{j in G} w_j e^{-w_j t} q_{G-j}(a; t)
= -d/dt P(N_G(t) <= a), the density that the n-th arrival is one of G's items with a of G before it. Both come
from one dynamic program over the catalog per quadrature node. Items outside every pool (dropped by the k-core,
never played) still compete in the race but give no row; the k-core must drop only such whole items, which
`exact_scores` checks by its callers passing the realized pools. The quadrature is Gauss-Legendre in log t over a
range that holds all but ~1e-12 of tau's mass; `Scores.mass_error` reports how far the integrated density of tau
is from 1 (the check that the nodes suffice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import gamma

USER, ITEM = "user_id", "track_id"
NODES = 48  # Gauss-Legendre nodes in log t; 96 changes the world's oracle AUCs by < 1e-6 (tests check mass)


@dataclass(frozen=True)
class GenerativeTruth:
    """What a generator knows: exposure weights over the catalog, draws per user, P(label | played)."""

    weights: Callable[[np.ndarray], np.ndarray]  # users -> (len(users), n_items) exposure weights, any scale
    n_draws: np.ndarray  # plays drawn per user id
    p_label: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (users, items) -> P(label = 1 | played)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set's rows (user, item) and how they were drawn."""

    frame: pd.DataFrame
    pool: np.ndarray  # items its plays and negatives come from
    share: float | None  # rows per pool play: floor(share * K) of K; None: every one of the K (cold)


@dataclass
class Scores:
    scores: dict[str, np.ndarray]  # set name -> Bayes score per frame row
    mass_error: float  # max over users of |integrated density of tau - 1|


def rows_in_set(k: np.ndarray, share: float | None) -> np.ndarray:
    """m(K): the rows a user with K pool plays has in the set (the split's floor, as `split_rows` does)."""
    return k.astype(np.float64) if share is None else np.floor(k * share)


def exact_scores(truth: GenerativeTruth, sets: dict[str, EvalSet], n_neg: int, nodes: int = NODES) -> Scores:
    """The Bayes score of every row of every set (module docstring), sets sharing a pool computed together."""
    n_items = truth.weights(np.zeros(1, dtype=np.int64)).shape[1]
    out: dict[str, np.ndarray] = {}
    mass_error = 0.0
    pools: dict[bytes, list[str]] = {}
    for name, item_set in sets.items():
        pools.setdefault(np.sort(item_set.pool).tobytes(), []).append(name)
    for names in pools.values():
        in_pool = np.zeros(n_items, dtype=bool)
        in_pool[sets[names[0]].pool] = True
        frames = pd.concat([sets[n].frame[[USER, ITEM]] for n in names], ignore_index=True)
        pairs = frames.drop_duplicates().sort_values([USER, ITEM], ignore_index=True)
        terms, err = _play_and_negative_terms(truth, pairs, in_pool, n_neg, [sets[n].share for n in names], nodes)
        mass_error = max(mass_error, err)
        for index, name in enumerate(names):
            frame = sets[name].frame
            a, b = terms[index]
            keyed = pd.DataFrame({USER: pairs[USER], ITEM: pairs[ITEM], "a": a, "b": b})
            joined = frame[[USER, ITEM]].merge(keyed, on=[USER, ITEM], how="left")
            share_played = joined.a.to_numpy() / (joined.a.to_numpy() + joined.b.to_numpy())
            users, items = frame[USER].to_numpy(np.int64), frame[ITEM].to_numpy(np.int64)
            out[name] = truth.p_label(users, items) * share_played
    return Scores(out, mass_error)


def _play_and_negative_terms(
    truth: GenerativeTruth,
    pairs: pd.DataFrame,
    in_pool: np.ndarray,
    n_neg: int,
    shares: list[float | None],
    nodes: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """(A, B) per (user, item) pair and share rule, users in blocks of similar n (one array shape per block)."""
    users = np.unique(pairs[USER].to_numpy(np.int64))
    users = users[np.argsort(truth.n_draws[users], kind="stable")]
    per_user = pairs.groupby(USER)[ITEM].apply(lambda s: s.to_numpy(np.int64)).to_dict()
    a_out = [np.zeros(len(pairs)) for _ in shares]
    b_out = [np.zeros(len(pairs)) for _ in shares]
    row_of = {key: n for n, key in enumerate(zip(pairs[USER].tolist(), pairs[ITEM].tolist(), strict=True))}
    mass_error, start = 0.0, 0
    while start < len(users):
        n_max = int(truth.n_draws[users[min(start + 63, len(users) - 1)]])
        f_max = max(len(per_user[u]) for u in users[start : start + 64])
        size = max(1, min(64, 3_000_000 // (nodes * n_max * (f_max + 1))))
        block = users[start : start + size]
        frame_items = [per_user[u] for u in block]
        terms, err = _block_terms(truth, block, frame_items, in_pool, n_neg, shares, nodes)
        mass_error = max(mass_error, err)
        for b_index, (u, items) in enumerate(zip(block, frame_items, strict=True)):
            rows = [row_of[(int(u), int(i))] for i in items]
            for s_index, (a, b) in enumerate(terms):
                a_out[s_index][rows] = a[b_index, : len(items)]
                b_out[s_index][rows] = b[b_index, : len(items)]
        start += len(block)
    return list(zip(a_out, b_out, strict=True)), mass_error


def _nodes(weights: np.ndarray, n: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: quadrature times t (B, T) and weights (dt included) covering tau_n's mass."""
    # t*: where the expected number of arrivals reaches n (bisection in log t).
    lo = np.log(n / weights.sum(1)) - 10.0
    hi = lo + 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        arrived = (-np.expm1(-weights * np.exp(mid)[:, None])).sum(1)
        lo, hi = np.where(arrived < n, mid, lo), np.where(arrived < n, hi, mid)
    centre = (lo + hi) / 2
    # tau_n / t* is never more spread than Gamma(n)/n (unequal weights only narrow the count's variance).
    left = np.log(gamma.ppf(1e-13, n) / n)
    right = np.log(gamma.isf(1e-13, n) / n)
    x, v = np.polynomial.legendre.leggauss(nodes)
    half, mid = (right - left) / 2, (right + left) / 2
    s = centre[:, None] + mid[:, None] + half[:, None] * x[None, :]
    t = np.exp(s)
    return t, half[:, None] * v[None, :] * t


def _add(q: np.ndarray, d: np.ndarray, p: np.ndarray, f: np.ndarray) -> None:
    """Fold one item (arrival prob p, density f, broadcast over the count axis) into (q, D), in place."""
    moved = d[..., :-1] * p  # D(a - 1) * p, from the values before this item
    d *= 1 - p
    d[..., 1:] += moved
    d += f * q
    moved = q[..., :-1] * p
    q *= 1 - p
    q[..., 1:] += moved


def _base_states(weights, t, in_pool, is_frame, length):
    """(q, D) of the pool without the user's frame items, and of every item outside the pool, per node."""
    empty = np.zeros((*t.shape, length))
    empty[..., 0] = 1.0
    q_pool, q_other = empty.copy(), empty.copy()
    d_pool, d_other = np.zeros_like(empty), np.zeros_like(empty)
    for j in range(weights.shape[1]):
        w = weights[:, j][:, None]
        e = np.exp(-w * t)
        p, f = (1 - e)[..., None], (w * e)[..., None]
        if in_pool[j]:
            keep = ~is_frame[:, j][:, None, None]
            _add(q_pool, d_pool, p * keep, f * keep)
        else:
            _add(q_other, d_other, p, f)
    return q_pool, d_pool, q_other, d_other


def _leave_one_out(q_pool, d_pool, weights, slots, t):
    """Copy k of the pool state gets every frame item but the one in slot k (padding slots are -1)."""
    f_max = slots.shape[1]
    q_loo = np.repeat(q_pool[:, None], f_max, axis=1)
    d_loo = np.repeat(d_pool[:, None], f_max, axis=1)
    for k in range(f_max):
        items = slots[:, k]
        w = np.where(items >= 0, np.take_along_axis(weights, np.maximum(items, 0)[:, None], 1)[:, 0], 0.0)
        e = np.exp(-w[:, None] * t)
        keep = (np.arange(f_max) != k)[None, :, None, None]
        _add(q_loo, d_loo, (1 - e)[:, None, :, None] * keep, (w[:, None] * e)[:, None, :, None] * keep)
    return q_loo, d_loo


def _block_terms(truth, block, frame_items, in_pool, n_neg, shares, nodes):
    """The DP for one block of users: pool without each frame item, and every item outside the pool."""
    weights = truth.weights(block).astype(np.float64)
    n = truth.n_draws[block].astype(np.int64)
    t, omega = _nodes(weights, n.astype(np.float64), nodes)
    length, n_users, f_max = int(n.max()), len(block), max(len(f) for f in frame_items)
    slots = np.full((n_users, f_max), -1)
    for b, items in enumerate(frame_items):
        slots[b, : len(items)] = items
    is_frame = np.zeros(weights.shape, dtype=bool)
    for b, items in enumerate(frame_items):
        is_frame[b, items] = True

    q_pool, d_pool, q_other, d_other = _base_states(weights, t, in_pool, is_frame, length)
    q_loo, d_loo = _leave_one_out(q_pool, d_pool, weights, slots, t)

    # Reverse the other group's counts to n-1-a per user so the sums over a are elementwise.
    a = np.arange(length)
    idx = n[:, None] - 1 - a[None, :]
    valid = idx >= 0
    gather = np.broadcast_to(np.maximum(idx, 0)[:, None, :], q_other.shape)
    q_rev = np.take_along_axis(q_other, gather, 2) * valid[:, None, :]
    d_rev = np.take_along_axis(d_other, gather, 2) * valid[:, None, :]
    nth_in_pool = d_loo * q_rev[:, None]  # the n-th arrival is a pool item
    nth_outside = q_loo * d_rev[:, None]  # the n-th arrival is another item
    mass = np.einsum("bt,bfta->bf", omega, nth_in_pool + nth_outside)
    real = slots >= 0
    mass_error = float(np.abs(mass - 1)[real].max()) if real.any() else 0.0

    w_i = np.where(real, np.take_along_axis(weights, np.maximum(slots, 0), 1), 0.0)
    stay_out = np.exp(-w_i[:, :, None] * t[:, None, :])  # (B, F, T): i arrives after tau
    size_pool = int(in_pool.sum())
    terms = []
    for share in shares:
        k = np.arange(length + 1, dtype=np.float64)
        m = rows_in_set(k, share)
        g = np.divide(m, k, out=np.zeros_like(m), where=k > 0)
        h = n_neg * m / np.maximum(size_pool - k, 1)
        played = (1 - stay_out) * np.einsum("bfta,a->bft", nth_in_pool + nth_outside, g[1:])
        negative = stay_out * (
            np.einsum("bfta,a->bft", nth_in_pool, h[1:]) + np.einsum("bfta,a->bft", nth_outside, h[:-1])
        )
        terms.append((np.einsum("bt,bft->bf", omega, played), np.einsum("bt,bft->bf", omega, negative)))
    return terms, mass_error


def monte_carlo_scores(
    weights: np.ndarray,
    n: int,
    in_pool: np.ndarray,
    p_label: np.ndarray,
    share: float | None,
    n_neg: int,
    reps: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One user simulated end to end: (score per item, its standard error), by the ratio estimator.

    Each replicate draws the plays as the world does (Gumbel top-n), keeps a random m(K) of the K pool plays as
    rows and draws n_neg * m(K) negatives uniformly from the free pool items; a play row counts P(label)
    positives. The score estimate is positive rows over rows, per item, pooled over replicates.
    """
    rng = np.random.default_rng(seed)
    keys = np.log(weights)[None, :] + rng.gumbel(size=(reps, len(weights)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    played_pool = (rank < n) & in_pool[None, :]
    m = rows_in_set(played_pool.sum(1), share).astype(np.int64)
    # A random m of the pool plays: the m smallest of random priorities among them.
    priority = np.where(played_pool, rng.random(played_pool.shape), np.inf)
    order = np.argsort(np.argsort(priority, axis=1), axis=1)
    rows = (order < m[:, None]).astype(np.float64)
    positives = rows * p_label[None, :]  # the label's expectation: only the rows' randomness is left
    free = in_pool[None, :] & ~played_pool
    n_free = free.sum(1)
    draws = n_neg * m
    # Negatives: each draw picks the r-th free item, r uniform; draws past a replicate's own count are unused.
    pick = (rng.random((reps, int(draws.max(initial=0)))) * n_free[:, None]).astype(np.int64)
    used = np.arange(pick.shape[1])[None, :] < draws[:, None]
    free_rank = np.cumsum(free, axis=1) - 1
    for r_index in range(pick.shape[1]):
        hit = free & (free_rank == pick[:, r_index : r_index + 1]) & used[:, r_index : r_index + 1]
        rows += hit
    mean_rows, mean_pos = rows.mean(0), positives.mean(0)
    ratio = np.divide(mean_pos, mean_rows, out=np.full(len(weights), np.nan), where=mean_rows > 0)
    # Delta method for a ratio of means: var(pos - ratio * rows) / (reps * mean_rows^2).
    resid = positives - np.nan_to_num(ratio)[None, :] * rows
    se = np.sqrt(resid.var(0, ddof=1) / reps) / np.where(mean_rows > 0, mean_rows, np.nan)
    return ratio, se
