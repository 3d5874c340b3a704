"""CLAP's audio tower (transformers' ClapAudioModelWithProjection, HTSAT) behind a fixed-shape forward, and its
text tower (ClapTextModelWithProjection, RoBERTa) for the query encoder of `/recommend?q=`.

The published checkpoints are whole ClapModels; the audio tower loads only their `audio_model.*` and
`audio_projection.*` weights, the text tower only `text_model.*` and `text_projection.*`. Fusion models always
get is_longer = False: every window is exactly 10 s, so the fusion branch (random crops of longer input) never
runs and the output is deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapTextConfig, ClapTextModelWithProjection

AUDIO_PREFIXES = ("audio_model.", "audio_projection.")
TEXT_PREFIXES = ("text_model.", "text_projection.")
_CONFIG_META = ("model_type", "architectures", "transformers_version")


def clap_audio_config(config: dict[str, Any]) -> ClapAudioConfig:
    """A ClapAudioConfig from a published ClapConfig (audio_config + projection_dim) or an audio config itself."""
    if "audio_config" in config:
        audio = dict(config["audio_config"] or {})
        audio.setdefault("projection_dim", config.get("projection_dim", 512))
        if "projection_hidden_act" in config:
            audio.setdefault("projection_hidden_act", config["projection_hidden_act"])
    else:
        audio = dict(config)
    audio = {k: v for k, v in audio.items() if k not in _CONFIG_META}
    return ClapAudioConfig(**audio)


class ClapAudio(nn.Module):
    """forward: log-mel (B, C, T, n_mels), C = 4 for fusion models else 1 -> (B, 1, projection_dim), L2-normalized."""

    def __init__(self, config: ClapAudioConfig) -> None:
        super().__init__()
        self.model = ClapAudioModelWithProjection(config)

    @property
    def config(self) -> ClapAudioConfig:
        return self.model.config

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        is_longer = torch.zeros(features.shape[0], 1, dtype=torch.bool)
        embeds = self.model(input_features=features, is_longer=is_longer).audio_embeds
        return F.normalize(embeds, dim=-1)[:, None, :]


def convert_clap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ClapModel (or audio-only) state dict -> the audio tower's keys; text tower and logit scales dropped."""
    return {key: value for key, value in state.items() if key.startswith(AUDIO_PREFIXES)}


def clap_text_config(config: dict[str, Any]) -> ClapTextConfig:
    """A ClapTextConfig from a published ClapConfig: its text_config with the shared projection settings."""
    text = dict(config.get("text_config") or {})
    text.setdefault("projection_dim", config.get("projection_dim", 512))
    if "projection_hidden_act" in config:
        text.setdefault("projection_hidden_act", config["projection_hidden_act"])
    return ClapTextConfig(**{k: v for k, v in text.items() if k not in _CONFIG_META})


class ClapText(nn.Module):
    """forward: token ids, attention mask, token type ids (B, T) -> (B, projection_dim), L2-normalized: the
    text embedding ClapModel compares with audio (projection of the pooled first token)."""

    def __init__(self, config: ClapTextConfig) -> None:
        super().__init__()
        self.model = ClapTextModelWithProjection(config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        pooled = self.model.text_model(input_ids, attention_mask, token_type_ids).pooler_output  # (B, H)
        return F.normalize(self.model.text_projection(pooled), dim=-1)


def convert_clap_text_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole ClapModel state dict -> the text tower's keys; audio tower and logit scales dropped."""
    return {key: value for key, value in state.items() if key.startswith(TEXT_PREFIXES)}
