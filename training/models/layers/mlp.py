"""Multi-layer perceptron: Linear -> [BatchNorm | LayerNorm] -> activation -> Dropout, per hidden layer."""

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Dropout(nn.Module):
    """Inverted dropout: each value kept with probability 1-p and scaled by 1/(1-p), as nn.Dropout.

    On CPU the keep mask comes from numpy's SFC64 generator, 32 random bits per value compared with
    round(p * 2**32) (so P(drop) is p to within 2**-33, finer than a float32 uniform's 2**-24), written straight
    into a float mask already scaled (0 or 1/(1-p)): 2.6 ms for a (4096, 400) mask on one thread against 7.7 ms
    for torch's `rand_like(x) >= p` (mt19937) and about 21 ms for nn.Dropout's `bernoulli_`. Dropout masks were
    the largest cost after the matmuls in the MLP models' training step (WideDeep, NFM, xDeepFM vs FuxiCTR,
    docs/benchmarks.md). Each mask's SFC64 seed is drawn from torch's generator, so torch.manual_seed still fixes
    every mask. Elsewhere (CUDA) the mask is `rand_like(x) >= p`. The forward is then one multiply, as is the
    backward."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        scale = 1.0 / (1.0 - self.p)
        if x.device.type == "cpu":
            return x * keep_mask(x.shape, self.p)  # a bf16 x (autocast) gives float32: the scale is not rounded
        if x.dtype != torch.float32:  # bf16 autocast: a scale stored in bf16 would round (1/0.6 -> 1.664)
            return x * (torch.rand_like(x) >= self.p) * scale
        return x * torch.rand_like(x).ge_(self.p).mul_(scale)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A float32 CPU tensor of `shape`: 1/(1-p) with probability 1-p, else 0 (see Dropout)."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**62, (1,)))  # from torch's global generator
    bits = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
    mask = np.empty(n, dtype=np.float32)
    np.greater_equal(bits, np.uint32(min(round(p * 2**32), 2**32 - 1)), out=mask)
    mask *= np.float32(1.0 / (1.0 - p))
    return torch.from_numpy(mask).view(shape)


class MLP(nn.Sequential):
    """(B, in_dim) -> (B, hidden[-1]) or (B, out_dim) when `out_dim` is given (no activation on it)."""

    def __init__(
        self,
        in_dim: int,
        hidden_units: Sequence[int],
        out_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        layer_norm: bool = False,
    ):
        layers: list[nn.Module] = []
        width = in_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            if layer_norm:
                layers.append(nn.LayerNorm(units))
            layers.append(ACTIVATIONS[activation.lower()]())
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.out_dim = width
