"""Graph blocks the graph recall models share: the normalized user-item graph, LightGCN propagation, and
the frozen item-item kNN graph built from content (FREEDOM's; LGMRec reuses the user-item pieces).

Graphs are scipy-built and handed to torch as coalesced sparse COO tensors (torch.sparse.mm back-propagates
into the dense operand, which is all the models need).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def to_torch(matrix: sp.spmatrix) -> torch.Tensor:
    """scipy sparse -> coalesced float32 torch sparse COO of the same shape."""
    coo = sp.coo_matrix(matrix)
    index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(index, values, coo.shape, check_invariants=False).coalesce()


def interactions(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary (U, I) matrix of distinct (user, item) pairs."""
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # duplicates were summed
    return matrix


def normalized_bipartite(r: sp.spmatrix) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of A = [[0, R], [R^T, 0]], shape (U + I, U + I): LightGCN's propagation matrix."""
    a = sp.bmat([[None, r], [r.T, None]], format="csr").astype(np.float32)
    degree = np.asarray(a.sum(1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0).astype(np.float32)
    d = sp.diags(inv_sqrt)
    return to_torch(d @ a @ d)


def row_normalized(r: sp.spmatrix) -> torch.Tensor:
    """R with rows scaled to sum 1, shape (U, I): a user's mean over the items they played."""
    degree = np.asarray(r.sum(1)).ravel()
    inv = np.where(degree > 0, 1.0 / np.maximum(degree, 1e-12), 0.0).astype(np.float32)
    return to_torch(sp.diags(inv) @ r)


def lightgcn(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Mean of the layer outputs E, AE, A^2E, ... (LightGCN), shape of `ego` (U + I, D)."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(torch.sparse.mm(adjacency, layers[-1]))
    return torch.stack(layers, dim=1).mean(dim=1)


def knn_graph(features: np.ndarray, k: int, present: np.ndarray | None = None, chunk: int = 2048) -> sp.csr_matrix:
    """(I, I) kNN graph by cosine similarity (self excluded), normalized as in FREEDOM: value of edge (i, j)
    = 1 / sqrt(deg(i) deg(j)) with deg the row counts. Items without this modality (`present` False) get no
    edges and are nobody's neighbour."""
    n = len(features)
    present = np.ones(n, bool) if present is None else np.asarray(present, bool)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    unit = np.where(present[:, None], unit, 0.0).astype(np.float32)
    k = max(0, min(k, int(present.sum()) - 1))
    rows, cols = [], []
    candidates = np.flatnonzero(present)
    for start in range(0, n, chunk):
        block = np.arange(start, min(n, start + chunk))
        block = block[present[block]]
        if k == 0 or len(block) == 0:
            continue
        sims = unit[block] @ unit[candidates].T
        sims[np.arange(len(block)), np.searchsorted(candidates, block)] = -np.inf  # no self-loops
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(block, k))
        cols.append(candidates[top].ravel())
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    row, col = np.concatenate(rows), np.concatenate(cols)
    degree = np.bincount(row, minlength=n).astype(np.float32)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    values = (inv_sqrt[row] * inv_sqrt[col]).astype(np.float32)
    return sp.csr_matrix((values, (row, col)), shape=(n, n))
