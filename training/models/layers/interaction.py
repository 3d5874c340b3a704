"""Feature-interaction functions shared by several models."""

import torch


def bi_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise element-wise products of field embeddings, in O(F*D): (B, F, D) -> (B, D).

    NFM's bi-interaction pooling; summed over D it is FM's second-order term.
    """
    square_of_sum = emb.sum(dim=1).pow(2)
    sum_of_square = emb.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square)


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise inner products of field embeddings, in O(F*D): (B, F, D) -> (B, 1)."""
    return bi_interaction(emb).sum(dim=1, keepdim=True)
