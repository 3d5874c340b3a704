"""Feature-interaction functions shared by several models."""

import torch


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise inner products of field embeddings, in O(F*D): (B, F, D) -> (B, 1)."""
    square_of_sum = emb.sum(dim=1).pow(2)
    sum_of_square = emb.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)
