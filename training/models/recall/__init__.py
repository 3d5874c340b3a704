"""Recall (candidate retrieval) models: user and item vectors scored by a dot product."""

from training.models.recall.bpr import BPR, bpr_loss

__all__ = ["BPR", "bpr_loss"]
