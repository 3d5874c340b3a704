"""Blocks shared by more than one model: field embeddings, the linear term, MLPs, FM interaction."""

from training.models.layers.embedding import FeatureEmbedding, LinearTerm
from training.models.layers.interaction import bi_interaction, fm_interaction
from training.models.layers.mlp import MLP, Dropout

__all__ = ["MLP", "Dropout", "FeatureEmbedding", "LinearTerm", "bi_interaction", "fm_interaction"]
