"""MusiCNN (Pons & Serra 2019) as a torch module: log-mel patch -> pooled layers, penultimate, tag logits.

The layers of the published `musicnn` models (musicnn/models.py, build_musicnn): a musically motivated
front end (timbral and temporal convolutions, each max-pooled over frequency), a residual 1-D conv mid end,
and a back end of temporal max + mean pooling, batch norm and two dense layers. Parameter names are ours;
encore.audio.musicnn_weights converts the TF checkpoints. The log-mel front end is numpy
(encore.audio.musicnn_encoder), outside this module, so ONNX Runtime serves it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default


@dataclass(frozen=True)
class MusicnnConfig:
    """What shapes the network; the published MSD_musicnn and MTT_musicnn both use these defaults."""

    n_mels: int = 96
    timbral_filters: int = 204  # int(1.6 * 128)
    timbral_heights: tuple[int, ...] = (38, 67)  # int(0.4 * 96), int(0.7 * 96) mel bands
    timbral_width: int = 7  # frames
    temporal_filters: int = 51  # int(1.6 * 32)
    temporal_widths: tuple[int, ...] = (128, 64, 32)  # frames
    mid_filters: int = 64
    mid_width: int = 7
    mid_layers: int = 3
    dense_units: int = 200
    n_tags: int = 50

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MusicnnConfig:
        """From config.json (lists become tuples; keys that are not fields are ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names})

    @property
    def front_dim(self) -> int:
        return self.timbral_filters * len(self.timbral_heights) + self.temporal_filters * len(self.temporal_widths)

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """Widths of the pooled layers: front end, each mid-end layer, penultimate."""
        return (self.front_dim, *(self.mid_filters,) * self.mid_layers, self.dense_units)


def same_pad(width: int) -> tuple[int, int]:
    """TF "same" padding for a stride-1 kernel: the odd extra frame goes at the end."""
    return (width - 1) // 2, width // 2


class FreqPooledConv(nn.Module):
    """Conv over (time, frequency) -> ReLU -> batch norm -> max over frequency: (B, 1, T, F) -> (B, C, T)."""

    def __init__(self, filters: int, width: int, height: int) -> None:
        super().__init__()
        self.pad = same_pad(width)  # timbral: 7 -> (3, 3) as the published explicit pad; temporal: TF "same"
        self.conv = nn.Conv2d(1, filters, (width, height))
        self.bn = nn.BatchNorm2d(filters, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, *self.pad))  # time only: frequency is "valid" and max-pooled anyway
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class MidEndLayer(nn.Module):
    """Conv1d over time ("same", 7 frames) -> ReLU -> batch norm: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, filters: int, width: int) -> None:
        super().__init__()
        self.pad = same_pad(width)
        self.conv = nn.Conv1d(in_channels, filters, width)
        self.bn = nn.BatchNorm1d(filters, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(F.pad(x, self.pad))))


class Musicnn(nn.Module):
    """forward: log-mel (B, T, n_mels) -> (tag probabilities (B, n_tags), penultimate (B, dense_units),
    time-mean of the front end and each mid-end layer (B, front_dim + mid_layers * mid_filters))."""

    def __init__(self, config: MusicnnConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MusicnnConfig()
        self.input_bn = nn.BatchNorm2d(1, eps=BN_EPS)
        self.timbral = nn.ModuleList(FreqPooledConv(c.timbral_filters, c.timbral_width, h) for h in c.timbral_heights)
        self.temporal = nn.ModuleList(FreqPooledConv(c.temporal_filters, w, 1) for w in c.temporal_widths)
        mid_inputs = (c.front_dim, *(c.mid_filters,) * (c.mid_layers - 1))
        self.mid = nn.ModuleList(MidEndLayer(n, c.mid_filters, c.mid_width) for n in mid_inputs)
        self.pool_bn = nn.BatchNorm1d(2 * (c.front_dim + c.mid_layers * c.mid_filters), eps=BN_EPS)
        self.dense = nn.Linear(self.pool_bn.num_features, c.dense_units)
        self.dense_bn = nn.BatchNorm1d(c.dense_units, eps=BN_EPS)
        self.head = nn.Linear(c.dense_units, c.n_tags)

    def feature_map(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> (B, front_dim + mid_layers * mid_filters, T): front end, then each mid-end output."""
        x = self.input_bn(mel.unsqueeze(1))  # (B, 1, T, F)
        front = torch.cat([block(x) for block in (*self.timbral, *self.temporal)], dim=1)  # (B, 561, T)
        layers, h = [front], front
        for i, layer in enumerate(self.mid):
            h = layer(h) if i == 0 else layer(h) + h  # residual from the second layer on
            layers.append(h)
        return torch.cat(layers, dim=1)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.feature_map(mel)  # (B, 753, T)
        mean_pool = features.mean(dim=2)
        # [max, mean] per channel, flattened channel-major: the published [753, 2] row-major layout.
        pooled = torch.stack([features.amax(dim=2), mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return torch.sigmoid(self.head(penultimate)), penultimate, mean_pool
