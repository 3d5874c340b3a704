"""AFM (Xiao et al., 2017): FM whose pairwise element-wise products are pooled by learned attention."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import Dropout, FeatureEmbedding, LinearTerm


class _AttentionScores(torch.autograd.Function):
    """relu(x W1^T + b1) w2^T over the (B*P, D) pair products -> (B*P, 1), in row chunks, hand-written backward.

    Autograd's backward of nn.Linear computes the first weight's gradient as g^T @ x, a (A, B*P) x (B*P, D)
    product with a transposed left operand: on CPU that took 47x as long as (x^T @ g)^T for Frappe's shapes
    (B*P = 4096 * 45 rows, A = 128, D = 10; one thread, the MKL sgemm), and was most of an AFM step.
    This one uses the fast orientation and works on CHUNK rows at a time, so the (rows, A) hidden layer stays
    in cache instead of streaming 94 MB tensors through memory several times; backward recomputes each chunk's
    hidden layer rather than keeping it.
    """

    CHUNK = 8192

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(x.shape[0], 1)
        for start in range(0, x.shape[0], _AttentionScores.CHUNK):
            rows = slice(start, start + _AttentionScores.CHUNK)
            torch.mm(torch.addmm(b1, x[rows], w1.t()).relu_(), w2.t(), out=out[rows])
        ctx.save_for_backward(x, w1, b1, w2)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w1, b1, w2 = ctx.saved_tensors
        grad_x, grad_w1t = torch.empty_like(x), torch.zeros_like(w1.t())  # (N, D), (D, A)
        grad_b1, grad_w2 = torch.zeros_like(b1), torch.zeros_like(w2)
        for start in range(0, x.shape[0], _AttentionScores.CHUNK):
            rows = slice(start, start + _AttentionScores.CHUNK)
            hidden = torch.addmm(b1, x[rows], w1.t()).relu_()  # (n, A), recomputed in cache
            grad_pre = torch.where(hidden > 0, grad[rows] * w2, 0.0)  # d score / d pre-activation
            grad_w1t.addmm_(x[rows].t(), grad_pre)  # the fast orientation
            grad_b1 += grad_pre.sum(0)
            grad_w2.addmm_(grad[rows].t(), hidden)
            torch.mm(grad_pre, w1, out=grad_x[rows])
        return grad_x, grad_w1t.t(), grad_b1, grad_w2


def attention_scores(attention: nn.Sequential, products: torch.Tensor) -> torch.Tensor:
    """The attention MLP's unnormalised scores of (B, P, D) products -> (B, P, 1); `attention` is
    Linear(D, A) -> ReLU -> Linear(A, 1, no bias) -> Softmax, whose softmax is left to the caller."""
    first, last = attention[0], attention[2]
    # Inference, eval mode and ONNX export (which traces with grad enabled) see the plain modules.
    if not (torch.is_grad_enabled() and first.training) or torch.jit.is_tracing():
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
