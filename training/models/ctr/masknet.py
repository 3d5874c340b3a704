"""MaskNet (Wang et al., 2021): instance-guided masks from the whole embedding gate each block."""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, Dropout, FeatureEmbedding


class MaskBlock(nn.Module):
    """mask = MLP(v_emb); out = LN(ReLU(W (mask * v_hidden))): (B, N_emb), (B, N_hidden) -> (B, out)."""

    def __init__(self, emb_dim: int, hidden_dim: int, out_dim: int, reduction: float, dropout: float, ln: bool):
        super().__init__()
        mask_width = int(hidden_dim * reduction)
        self.mask = nn.Sequential(nn.Linear(emb_dim, mask_width), nn.ReLU(), nn.Linear(mask_width, hidden_dim))
        layers: list[nn.Module] = [nn.Linear(hidden_dim, out_dim, bias=False)]
        if ln:
            layers.append(nn.LayerNorm(out_dim))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(Dropout(dropout))
        self.hidden = nn.Sequential(*layers)

    def forward(self, v_emb: torch.Tensor, v_hidden: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.mask(v_emb) * v_hidden)


class MaskNet(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 40,
        model_type: Literal["serial", "parallel"] = "parallel",
        hidden_units: Sequence[int] = (400, 400, 400),
        num_blocks: int = 3,  # parallel: number of mask blocks side by side
        block_dim: int = 50,  # parallel: output width of each block
        reduction_ratio: float = 2.0,
        dropout: float = 0.1,
        emb_layernorm: bool = False,
        net_layernorm: bool = True,
    ):
        super().__init__(spec)
        self.model_type = model_type
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        n_fields = self.embedding.num_fields
        in_dim = n_fields * embedding_dim
        self.emb_norm = nn.LayerNorm(embedding_dim) if emb_layernorm else None
        if model_type == "parallel":
            self.blocks = nn.ModuleList(
                MaskBlock(in_dim, in_dim, block_dim, reduction_ratio, dropout, net_layernorm) for _ in range(num_blocks)
            )
            self.head = MLP(block_dim * num_blocks, hidden_units, out_dim=1, dropout=dropout)
        else:
            # Serial: each block's output is the next block's hidden input; the mask always sees v_emb.
            widths = [in_dim, *hidden_units]
            self.blocks = nn.ModuleList(
                MaskBlock(in_dim, widths[i], widths[i + 1], reduction_ratio, dropout, net_layernorm)
                for i in range(len(hidden_units))
            )
            self.head = nn.Linear(widths[-1], 1)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        v_emb = (self.emb_norm(emb) if self.emb_norm is not None else emb).flatten(1)
        v_raw = emb.flatten(1)
        if self.model_type == "parallel":
            out = torch.cat([block(v_emb, v_raw) for block in self.blocks], dim=-1)
        else:
            out = v_emb
            for block in self.blocks:
                out = block(v_emb, out)
        return self.head(out).squeeze(1)
