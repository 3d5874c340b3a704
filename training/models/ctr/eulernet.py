"""EulerNet (Tian et al., 2023): field embeddings as complex numbers; in polar form, products of features
become weighted sums of log-magnitudes and phases, so the interaction orders are learned weights.

Complex values are carried as (real, imaginary) pairs of real tensors: every op is real-valued and exports
to ONNX (atan2 -> Atan/Div/Where).
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import Dropout, FeatureEmbedding


class EulerInteraction(nn.Module):
    """(re, im) of shape (B, N_in, D) -> (B, N_out, D).

    Explicit part: to polar form (log-magnitude, phase), mix the N_in "features" with learned orders
    (N_in x N_out), back to rectangular form. Implicit part: a Linear on the flattened real and imaginary
    parts (shared weights), ReLU. The two parts are added.
    """

    def __init__(self, n_in: int, n_out: int, dim: int, layer_norm: bool, ex_dropout: float, im_dropout: float):
        super().__init__()
        self.dim = dim
        if n_in == n_out:
            orders = torch.eye(n_in)
        else:  # near one-hot columns: each output starts as (almost) one input feature (the paper's init)
            orders = torch.softmax(torch.randn(n_in, n_out) / 0.01, dim=0)
        self.orders = nn.Parameter(orders)
        self.implicit = nn.Linear(n_in * dim, n_out * dim)
        self.bias_magnitude = nn.Parameter(torch.randn(1, dim, n_out) * 0.01)
        self.bias_phase = nn.Parameter(torch.randn(1, dim, n_out) * 0.01)
        self.drop_ex = Dropout(ex_dropout)
        self.drop_im = Dropout(im_dropout)
        self.norm_re = nn.LayerNorm(dim) if layer_norm else None
        self.norm_im = nn.LayerNorm(dim) if layer_norm else None

    def reset_parameters(self) -> None:
        """EulerNet's own init of the implicit Linear (xavier-uniform weight, torch's default bias)."""
        nn.init.xavier_uniform_(self.implicit.weight)
        bound = 1.0 / math.sqrt(self.implicit.in_features)
        nn.init.uniform_(self.implicit.bias, -bound, bound)

    def forward(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = re.shape[0]
        log_mag = 0.5 * torch.log(re.pow(2) + im.pow(2) + 1e-8)  # (B, N_in, D)
        phase = torch.atan2(im, re)
        log_mag, phase = self.drop_ex(log_mag), self.drop_ex(phase)
        # (B, D, N_in) @ (N_in, N_out): each output is a product of inputs raised to learned powers.
        magnitude = torch.exp(log_mag.transpose(1, 2) @ self.orders + self.bias_magnitude).transpose(1, 2)
        phase = (phase.transpose(1, 2) @ self.orders + self.bias_phase).transpose(1, 2)  # (B, N_out, D)
        re_im = torch.relu(self.implicit(self.drop_im(re.reshape(batch, -1)))).view(batch, -1, self.dim)
        im_im = torch.relu(self.implicit(self.drop_im(im.reshape(batch, -1)))).view(batch, -1, self.dim)
        out_re = re_im + magnitude * torch.cos(phase)
        out_im = im_im + magnitude * torch.sin(phase)
        if self.norm_re is not None:
            out_re, out_im = self.norm_re(out_re), self.norm_im(out_im)
        return out_re, out_im


class EulerNet(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 10,
        shape: Sequence[int] = (3,),  # output "features" of each interaction layer
        net_ex_dropout: float = 0.0,
        net_im_dropout: float = 0.0,
        layer_norm: bool = False,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        widths = [self.embedding.num_fields, *shape]
        self.layers = nn.ModuleList(
            EulerInteraction(widths[i], widths[i + 1], embedding_dim, layer_norm, net_ex_dropout, net_im_dropout)
            for i in range(len(shape))
        )
        self.magnitude = nn.Parameter(torch.ones(1, self.embedding.num_fields, 1))  # mu: per-field modulus
        self.fc = nn.Linear(widths[-1] * embedding_dim, 1)  # shared by the real and imaginary parts
        self.init_weights()
        # FuxiCTR's EulerNet builds these after its generic init, so they keep their own initializers.
        for layer in self.layers:
            layer.reset_parameters()
        bound = 1.0 / math.sqrt(self.fc.in_features)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D): phases of unit-modulus numbers, scaled by mu
        re, im = self.magnitude * torch.cos(emb), self.magnitude * torch.sin(emb)
        for layer in self.layers:
            re, im = layer(re, im)
        return (self.fc(re.flatten(1)) + self.fc(im.flatten(1))).squeeze(1)
