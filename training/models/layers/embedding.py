"""Field embeddings: packed inputs (see `FeatureSpec.pack`) -> one D-vector per field.

Field order in the output is the spec's packed order: sparse fields, scaled numerics, token lists, dense.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from encore.schema import PAD, FeatureSpec
from training.models.layers.mlp import MLP

DenseMode = Literal["mlp", "linear", "none"]


class _Lookup(torch.autograd.Function):
    """Rows of `weight` at `ids`, with a scatter-add backward: the same gradient as nn.Embedding's.

    On CPU, embedding_dense_backward sorts the B*F ids before summing their gradients; one whole-table
    lookup of a Frappe batch (40,960 ids, D=10) took 2.5 ms there against 1.2 ms for index_add_, and the
    linear term's D=1 table 2.2 ms against 0.1 ms for a weighted bincount. That was half of FM's training step
    (profiled against FuxiCTR, docs/benchmarks.md). Only the summation order differs (float rounding).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.num_rows, ctx.dtype = weight.shape[0], weight.dtype
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        flat, dim = ids.reshape(-1), grad.shape[-1]
        grad = grad.reshape(-1, dim).to(ctx.dtype)  # bf16 autocast may hand back a bf16 gradient
        if dim == 1:
            return torch.bincount(flat, grad[:, 0], minlength=ctx.num_rows).unsqueeze(1), None
        return grad.new_zeros(ctx.num_rows, dim).index_add_(0, flat, grad), None


def lookup(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """`table(ids)` for a table without padding row; on CPU in training, with `_Lookup`'s faster backward."""
    weight = table.weight
    # Under torch.compile the plain lookup: Inductor generates its backward, while _Lookup's bincount (an output
    # shape that depends on the data) breaks the graph and recompiles the rest at every step.
    eager_cpu_training = weight.device.type == "cpu" and not torch.compiler.is_compiling()
    if eager_cpu_training and torch.is_grad_enabled() and weight.requires_grad:
        return _Lookup.apply(weight, ids)
    return table(ids)  # GPU (its own kernel is fast), inference and ONNX export see the plain lookup


class FeatureEmbedding(nn.Module):
    """(inputs) -> (B, F, D).

    All one-index fields share a single table with per-field offsets (one lookup per batch instead of F).
    A dense content vector goes through a trainable MLP into one extra field (TASTE: 1024-512-32-D).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        dim: int,
        dense_mode: DenseMode = "mlp",
        dense_hidden: Sequence[int] = (512, 32),
    ):
        super().__init__()
        self.spec, self.dim = spec, dim
        sizes = [f.num_embeddings for f in spec.sparse_fields]
        offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0)
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.sparse = nn.Embedding(sum(sizes), dim) if sizes else None
        # A scaled numeric value multiplies its own learned vector (FuxiCTR's numeric embedding).
        n_scaled = len(spec.scaled_fields)
        self.numeric = nn.Parameter(torch.empty(n_scaled, dim)) if n_scaled else None
        self.tokens = nn.ModuleDict(
            {f.name: nn.Embedding(f.num_embeddings, dim, padding_idx=PAD) for f in spec.token_fields}
        )
        self.dense_mode = dense_mode
        if dense_mode == "mlp":
            self.dense = nn.ModuleDict({f.name: MLP(f.dim, dense_hidden, out_dim=dim) for f in spec.dense_fields})
        elif dense_mode == "linear":
            self.dense = nn.ModuleDict({f.name: nn.Linear(f.dim, dim, bias=False) for f in spec.dense_fields})
        else:
            self.dense = nn.ModuleDict()
        self.num_fields = len(sizes) + n_scaled + len(spec.token_fields) + len(self.dense)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.numeric is not None:
            nn.init.normal_(self.numeric, std=1e-4)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.sparse is not None:
            parts.append(lookup(self.sparse, inputs["sparse"] + self.offsets))  # (B, F_sparse, D)
        if self.numeric is not None:
            parts.append(inputs["numeric"].unsqueeze(-1) * self.numeric)  # (B, F_num, D)
        for name, table in self.tokens.items():
            ids = inputs[name]  # (B, L), PAD-padded
            mask = (ids != PAD).unsqueeze(-1).to(torch.float32)
            pooled = (table(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # mean of real tokens
            parts.append(pooled.unsqueeze(1))
        for name, proj in self.dense.items():
            parts.append(proj(inputs[name]).unsqueeze(1))
        return torch.cat(parts, dim=1)


class LinearTerm(nn.Module):
    """First-order term: one learned weight per active value, summed, plus a bias: (inputs) -> (B, 1).

    Dense content sits outside the linear term (as in TASTE) unless `include_dense`: LR has nothing
    else, so it takes a linear map of the vector instead of silently ignoring it.
    """

    def __init__(self, spec: FeatureSpec, include_dense: bool = False, use_bias: bool = True):
        super().__init__()
        self.weights = FeatureEmbedding(spec, 1, dense_mode="linear" if include_dense else "none")
        self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.weights(inputs).sum(dim=1)  # (B, 1)
        return out + self.bias if self.bias is not None else out
