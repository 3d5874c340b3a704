"""WuKong (Zhang et al., 2024): a stack of interaction layers, each a factorization-machine block (FMB) beside
a linear compression block (LCB) over the embedding rows, with a residual and layer norm; an MLP on top."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding


class FactorizationMachineBlock(nn.Module):
    """(B, N, D) -> (B, N_out, D): the N x N (or low-rank N x k) dot-product matrix, normed, through an MLP."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        dim: int,
        rank: int | None,
        hidden_units: Sequence[int],
        activation: str,
        dropout: float,
    ):
        super().__init__()
        self.n_out, self.dim = n_out, dim
        # Optimized FM: X X^T Y with a learned (N, k) projection Y instead of the full X X^T.
        self.projection = nn.Parameter(torch.randn(n_in, rank)) if rank is not None else None
        fm_dim = n_in * (rank if rank is not None else n_in)
        self.norm = nn.LayerNorm(fm_dim)
        self.mlp = nn.Sequential(
            MLP(fm_dim, hidden_units, out_dim=n_out * dim, activation=activation, dropout=dropout), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            fm = x @ (x.transpose(1, 2) @ self.projection)  # (B, N, k)
        else:
            fm = x @ x.transpose(1, 2)  # (B, N, N)
        return self.mlp(self.norm(fm.flatten(1))).view(-1, self.n_out, self.dim)


class WuKongLayer(nn.Module):
    """[FMB(x); LCB(x)] + residual(x), then LayerNorm over D: (B, N_in, D) -> (B, n_fmb + n_lcb, D)."""

    def __init__(
        self,
        n_in: int,
        n_lcb: int,
        n_fmb: int,
        dim: int,
        rank: int | None,
        fmb_hidden_units: Sequence[int],
        fmb_activation: str,
        dropout: float,
        layer_norm: bool,
    ):
        super().__init__()
        self.fmb = FactorizationMachineBlock(n_in, n_fmb, dim, rank, fmb_hidden_units, fmb_activation, dropout)
        self.lcb = nn.Linear(n_in, n_lcb, bias=False)  # linear recombination of the N_in rows
        n_out = n_lcb + n_fmb
        self.residual = nn.Linear(n_in, n_out) if n_in != n_out else None
        self.norm = nn.LayerNorm(dim) if layer_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lcb = self.lcb(x.transpose(1, 2)).transpose(1, 2)
        out = torch.cat([self.fmb(x), lcb], dim=1)
        out = out + (self.residual(x.transpose(1, 2)).transpose(1, 2) if self.residual is not None else x)
        return self.norm(out) if self.norm is not None else out


class WuKong(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 64,
        num_layers: int = 3,
        lcb_features: int = 40,
        fmb_features: int = 40,
        fmb_hidden_units: Sequence[int] = (32, 32),
        fmb_activation: str = "relu",
        fmb_rank: int | None = 8,
        hidden_units: Sequence[int] = (32, 32),
        activation: str = "relu",
        batch_norm: bool = True,
        layer_norm: bool = True,
        dropout: float = 0.0,  # inside the FMB MLPs
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        n_out = lcb_features + fmb_features
        self.layers = nn.Sequential(
            *(
                WuKongLayer(
                    self.embedding.num_fields if i == 0 else n_out,
                    lcb_features,
                    fmb_features,
                    embedding_dim,
                    fmb_rank,
                    fmb_hidden_units,
                    fmb_activation,
                    dropout,
                    layer_norm,
                )
                for i in range(num_layers)
            )
        )
        self.head = MLP(n_out * embedding_dim, hidden_units, out_dim=1, activation=activation, batch_norm=batch_norm)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.layers(self.embedding(inputs)).flatten(1)).squeeze(1)
