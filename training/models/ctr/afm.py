"""AFM (Xiao et al., 2017): FM whose pairwise element-wise products are pooled by learned attention."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import Dropout, FeatureEmbedding, LinearTerm


class _AttentionScores(torch.autograd.Function):
    """relu(x W1^T + b1) w2^T over the (B*P, D) pair products -> (B*P, 1), with a hand-written backward.

    Autograd's backward of nn.Linear computes the first weight's gradient as g^T @ x, a (A, B*P) x (B*P, D)
    product with a transposed left operand: on CPU that took 47x as long as (x^T @ g)^T for Frappe's shapes
    (B*P = 4096 * 45 rows, A = 128, D = 10; one thread, the MKL sgemm), and was most of an AFM step.
    This backward uses the fast orientation and folds the ReLU mask into the score gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        hidden = torch.addmm(b1, x, w1.t()).relu_()  # (N, A)
        ctx.save_for_backward(x, w1, w2, hidden)
        return hidden @ w2.t()  # (N, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w1, w2, hidden = ctx.saved_tensors
        grad_pre = torch.where(hidden > 0, grad * w2, 0.0)  # (N, A): d score / d pre-activation
        grad_w1 = (x.t() @ grad_pre).t()  # (A, D), the fast orientation
        return grad_pre @ w1, grad_w1, grad_pre.sum(0), grad.t() @ hidden


def attention_scores(attention: nn.Sequential, products: torch.Tensor) -> torch.Tensor:
    """The attention MLP's unnormalised scores of (B, P, D) products -> (B, P, 1); `attention` is
    Linear(D, A) -> ReLU -> Linear(A, 1, no bias) -> Softmax, whose softmax is left to the caller."""
    first, last = attention[0], attention[2]
    if not torch.is_grad_enabled():  # inference and ONNX export see the plain modules
        return last(torch.relu(first(products)))
    batch, pairs, dim = products.shape
    flat = products.reshape(batch * pairs, dim)
    return _AttentionScores.apply(flat, first.weight, first.bias, last.weight).view(batch, pairs, 1)


class AFM(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 40,
        attention_dim: int = 10,
        attention_dropout: Sequence[float] = (0.0, 0.0),  # on the attention weights, then on the pooled vector
        use_attention: bool = True,  # False: plain sum of the products (FM)
    ):
        super().__init__(spec)
        self.use_attention = use_attention
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        self.linear = LinearTerm(spec)
        rows, cols = torch.triu_indices(self.embedding.num_fields, self.embedding.num_fields, offset=1)
        self.register_buffer("field_p", rows, persistent=False)
        self.register_buffer("field_q", cols, persistent=False)
        self.attention = nn.Sequential(
            nn.Linear(embedding_dim, attention_dim),
            nn.ReLU(),
            nn.Linear(attention_dim, 1, bias=False),
            nn.Softmax(dim=1),  # over the pairs
        )
        self.weight_dropout = Dropout(attention_dropout[0])
        self.pooled_dropout = Dropout(attention_dropout[1])
        self.projection = nn.Linear(embedding_dim, 1, bias=False)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        products = emb.index_select(1, self.field_p) * emb.index_select(1, self.field_q)  # (B, P, D)
        if self.use_attention:
            weights = self.weight_dropout(self.attention[3](attention_scores(self.attention, products)))  # (B, P, 1)
            pooled = self.pooled_dropout((weights * products).sum(dim=1))  # (B, D)
            afm = self.projection(pooled)
        else:
            afm = products.sum(dim=(1, 2)).unsqueeze(1)
        return (self.linear(inputs) + afm).squeeze(1)
