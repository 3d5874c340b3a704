"""FinalMLP (Mao et al., 2023): two MLP streams over gated copies of all field embeddings (dense content
included), fused by a multi-head bilinear aggregation."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.errors import EncoreError
from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding


class FeatureGate(nn.Module):
    """Stream-specific feature selection: 2 * sigmoid(MLP(context)) scales every embedding coordinate.

    The context is the stream's own embeddings of a few sparse fields (e.g. user, item), or a learned
    vector when no field is named.
    """

    def __init__(self, spec: FeatureSpec, context: Sequence[str], dim: int, out_dim: int, hidden: Sequence[int]):
        super().__init__()
        sparse_names = [f.name for f in spec.sparse_fields]
        unknown = [name for name in context if name not in sparse_names]
        if unknown:
            raise EncoreError(f"FinalMLP context field(s) {unknown} are not sparse fields of the spec: {sparse_names}")
        self.register_buffer("columns", torch.tensor([sparse_names.index(n) for n in context]), persistent=False)
        # Own tables, apart from the main embedding (as in FuxiCTR); empty context: one learned vector.
        self.tables = nn.ModuleList(nn.Embedding(spec[name].num_embeddings, dim) for name in context)
        self.bias = nn.Parameter(torch.zeros(1, dim)) if not context else None
        self.gate = nn.Sequential(MLP(dim * max(1, len(context)), hidden, out_dim=out_dim), nn.Sigmoid())

    def forward(self, inputs: dict[str, torch.Tensor], flat_emb: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            ctx = self.bias.expand(flat_emb.shape[0], -1)
        else:
            ids = inputs["sparse"].index_select(1, self.columns)
            ctx = torch.cat([table(ids[:, i]) for i, table in enumerate(self.tables)], dim=1)
        return flat_emb * (2.0 * self.gate(ctx))


class InteractionAggregation(nn.Module):
    """logit = w_x.x + w_y.y + sum over heads of x_h^T W_h y_h: (B, X), (B, Y) -> (B, 1)."""

    def __init__(self, x_dim: int, y_dim: int, num_heads: int):
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise EncoreError(f"FinalMLP: stream widths {x_dim} and {y_dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_x, self.head_y = num_heads, x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1)
        self.w_xy = nn.Parameter(torch.empty(num_heads, self.head_x, self.head_y))
        nn.init.xavier_normal_(self.w_xy.view(-1, 1))  # FuxiCTR's init: a (heads*X*Y, 1) matrix

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx = x.view(-1, self.num_heads, self.head_x).transpose(0, 1)  # (heads, B, X)
        hy = y.view(-1, self.num_heads, self.head_y).transpose(0, 1)  # (heads, B, Y)
        # One (B, X) @ (X, Y) GEMM per head. A broadcast matmul of (B, heads, 1, X) with W (as FuxiCTR writes
        # it) materializes W once per row, forward and backward: ~6x slower per synthetic-grid epoch on CPU.
        bilinear = (torch.bmm(hx, self.w_xy) * hy).sum(dim=(0, 2))  # (B,)
        return self.w_x(x) + self.w_y(y) + bilinear.unsqueeze(1)


class FinalMLP(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 10,
        mlp1_hidden_units: Sequence[int] = (64, 64, 64),
        mlp1_activation: str = "relu",
        mlp1_dropout: float = 0.0,
        mlp1_batch_norm: bool = False,
        mlp2_hidden_units: Sequence[int] = (64, 64, 64),
        mlp2_activation: str = "relu",
        mlp2_dropout: float = 0.0,
        mlp2_batch_norm: bool = False,
        use_fs: bool = True,
        fs_hidden_units: Sequence[int] = (64,),
        fs1_context: Sequence[str] = (),
        fs2_context: Sequence[str] = (),
        num_heads: int = 1,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        flat_dim = self.embedding.num_fields * embedding_dim
        self.mlp1 = MLP(flat_dim, mlp1_hidden_units, activation=mlp1_activation, dropout=mlp1_dropout,
                        batch_norm=mlp1_batch_norm)  # fmt: skip
        self.mlp2 = MLP(flat_dim, mlp2_hidden_units, activation=mlp2_activation, dropout=mlp2_dropout,
                        batch_norm=mlp2_batch_norm)  # fmt: skip
        if use_fs:
            self.gate1 = FeatureGate(spec, fs1_context, embedding_dim, flat_dim, fs_hidden_units)
            self.gate2 = FeatureGate(spec, fs2_context, embedding_dim, flat_dim, fs_hidden_units)
        else:
            self.gate1 = self.gate2 = None
        self.fusion = InteractionAggregation(self.mlp1.out_dim, self.mlp2.out_dim, num_heads)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        flat = self.embedding(inputs).flatten(1)  # (B, F*D), the dense content field included
        x1 = self.gate1(inputs, flat) if self.gate1 is not None else flat
        x2 = self.gate2(inputs, flat) if self.gate2 is not None else flat
        return self.fusion(self.mlp1(x1), self.mlp2(x2)).squeeze(1)
