"""MuQ as a torch module: normalized log-mel -> 2-block residual conv front end -> wav2vec2-conformer layers.

Built from transformers' Wav2Vec2ConformerEncoderLayer plus our own conv front end, with parameter names
that match the published OpenMuQ checkpoint after `convert_muq_state_dict` (docs/encoders.md has the map).
The mel front end is numpy (encore.audio.melspec), outside this module, so ONNX runs without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Wav2Vec2ConformerConfig
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
    Wav2Vec2ConformerEncoderLayer,
    Wav2Vec2ConformerRelPositionalEmbedding,
    Wav2Vec2ConformerRotaryPositionalEmbedding,
)

# Published keys with no part in feature extraction: the pre-training head, the CLS token, the random
# projection quantizer, and the conformer's convolutional position embedding (built, never called).
_UNUSED_PREFIXES = ("linear.", "cls_token", "quantizer_", "conformer.pos_conv_embed.", "recon_proj.")


@dataclass
class MuQConfig:
    """The fields of the published MuQ config.json that shape the network; from_dict ignores the rest."""

    n_mels: int = 128
    hop_length: int = 240
    conv_dim: int = 512  # channels of the residual conv blocks
    encoder_dim: int = 1024
    encoder_depth: int = 12
    label_rate: int = 25  # frames per second after the front end (100 / 4)
    stat: dict[str, float] = field(
        default_factory=lambda: {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623}
    )
    # transformers Wav2Vec2ConformerConfig fields; hidden size and depth come from encoder_dim/encoder_depth.
    w2v2_config: dict[str, Any] = field(
        default_factory=lambda: {
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "hidden_act": "swish",
            "conv_depthwise_kernel_size": 31,
            "position_embeddings_type": "rotary",
            "rotary_embedding_base": 10000,
            "layer_norm_eps": 1e-5,
        }
    )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MuQConfig:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in config.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def conformer_config(self) -> Wav2Vec2ConformerConfig:
        settings = {**self.w2v2_config, "hidden_size": self.encoder_dim, "num_hidden_layers": self.encoder_depth}
        settings = {k: v for k, v in settings.items() if k not in ("architectures", "model_type", "torch_dtype")}
        # Inference only: dropout off whatever the training config said.
        settings |= {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "layerdrop": 0.0}
        config = Wav2Vec2ConformerConfig(**settings)
        config._attn_implementation = "eager"  # plain matmul attention: the same graph in torch and ONNX
        return config


class ResBlock2d(nn.Module):
    """Two 3x3 convs with batch norm and a strided 3x3 shortcut (names as the published checkpoint)."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(self.bn3(self.conv3(x)) + out)


class ConvSubsampling(nn.Module):
    """(B, n_mels, T) -> (B, T / 4, encoder_dim): two blocks halve frequency and time, then a linear layer."""

    def __init__(self, n_mels: int, conv_dim: int, encoder_dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(ResBlock2d(1, conv_dim, (2, 2)), ResBlock2d(conv_dim, conv_dim, (2, 2)))
        self.linear = nn.Linear(conv_dim * (n_mels // 4), encoder_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # (B, C, F / 4, T / 4)
        x = x.permute(0, 3, 1, 2).flatten(2)  # (B, T / 4, C * F / 4), channel-major as the published model
        return self.linear(x)


class Conformer(nn.Module):
    """Position embedding, conformer layers, final LayerNorm; returns every hidden state."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        if config.position_embeddings_type == "rotary":
            self.embed_positions = Wav2Vec2ConformerRotaryPositionalEmbedding(config)
        elif config.position_embeddings_type == "relative":
            self.embed_positions = Wav2Vec2ConformerRelPositionalEmbedding(config)
        else:
            self.embed_positions = None
        self.layers = nn.ModuleList(Wav2Vec2ConformerEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, D) -> depth + 1 states: the input, then each layer's output (the last one layer-normed)."""
        positions = self.embed_positions(x) if self.embed_positions is not None else None
        states = [x]
        for layer in self.layers:
            x = layer(x, relative_position_embeddings=positions)
            states.append(x)
        states[-1] = self.layer_norm(x)
        return states


class MuQ(nn.Module):
    """forward: normalized log-mel (B, n_mels, T) -> (B, len(pooled_layers), encoder_dim), time-mean-pooled."""

    def __init__(self, config: MuQConfig, pooled_layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.config = config
        self.pooled_layers = pooled_layers or tuple(range(1, config.encoder_depth + 1))
        self.conv = ConvSubsampling(config.n_mels, config.conv_dim, config.encoder_dim)
        self.conformer = Conformer(config.conformer_config())

    def hidden_states(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """encoder_depth + 1 states of (B, T / 4, D): the conv front end's, then each conformer layer's."""
        return self.conformer(self.conv(mel))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        states = self.hidden_states(mel)
        return torch.stack([states[i].mean(dim=1) for i in self.pooled_layers], dim=1)


def convert_muq_state_dict(state: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Published MuQ keys (`model.conv...`, `model.conformer...`) -> ours: strip `prefix`, drop unused parts.

    Keys already in our naming (no prefix) pass through, so one loader reads both.
    """
    converted = {}
    for key, value in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if not name.startswith(_UNUSED_PREFIXES):
            converted[name] = value
    return converted
