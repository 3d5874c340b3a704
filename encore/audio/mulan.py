"""MuQ-MuLan's audio tower as a torch module: MuQ -> linear -> 8-layer transformer -> time mean -> 512-d latent.

Only the audio side of the published joint model (the text tower is not needed to embed audio). Parameter
names match the published checkpoint after `convert_mulan_state_dict`; the output is L2-normalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encore.audio.muq import MuQ, MuQConfig, convert_muq_state_dict


@dataclass
class MuLanAudioConfig:
    """From the published config.json: audio_transformer.*, audio_model.{model_dim, use_layer_idx}, mulan.dim_latent."""

    dim: int = 768
    depth: int = 8
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    model_dim: int = 1024  # MuQ's hidden size
    use_layer_idx: int = -1  # which MuQ hidden state feeds the transformer
    dim_latent: int = 512

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MuLanAudioConfig:
        tower = config.get("audio_transformer", {})
        audio_model = config.get("audio_model", {})
        return cls(
            dim=tower.get("dim", cls.dim),
            depth=tower.get("tf_depth", cls.depth),
            heads=tower.get("heads", cls.heads),
            dim_head=tower.get("dim_head", cls.dim_head),
            ff_mult=tower.get("ff_mult", cls.ff_mult),
            model_dim=audio_model.get("model_dim") or cls.model_dim,
            use_layer_idx=audio_model.get("use_layer_idx", cls.use_layer_idx),
            dim_latent=config.get("mulan", {}).get("dim_latent", cls.dim_latent),
        )


class ScaleNorm(nn.Module):
    """LayerNorm with a learned scale and no bias (the published `LayerNorm`, parameter `learned_gamma`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim  # a Python int, not x.shape[-1]: the ONNX tracer needs the normalized shape constant
        self.learned_gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.learned_gamma)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    hidden = int(dim * mult * 2 / 3)
    # Index 3 is the (inference-time no-op) dropout of the published model, kept so weight indices match.
    return nn.Sequential(
        ScaleNorm(dim),
        nn.Linear(dim, hidden * 2, bias=False),
        GEGLU(),
        nn.Identity(),
        nn.Linear(hidden, dim, bias=False),
    )


class Attention(nn.Module):
    """Pre-norm self-attention with L2-normalized queries and keys, learned per-dim scales, fixed scale 8."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = ScaleNorm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, heads * dim_head * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q, k, v = (self.to_q(x), *self.to_kv(x).chunk(2, dim=-1))
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, N, d)
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        attn = (q @ k.transpose(-1, -2) * 8.0).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), feed_forward(dim, ff_mult)]) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class MuLanAudio(nn.Module):
    """forward: normalized log-mel (B, n_mels, T) -> (B, 1, dim_latent), L2-normalized."""

    def __init__(self, config: MuLanAudioConfig, muq_config: MuQConfig) -> None:
        super().__init__()
        self.config = config
        self.muq = MuQ(muq_config)
        self.proj = nn.Linear(config.model_dim, config.dim)
        self.transformer = Transformer(config.dim, config.depth, config.heads, config.dim_head, config.ff_mult)
        self.audio_to_latents = nn.Linear(config.dim, config.dim_latent)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        hidden = self.muq.hidden_states(mel)[self.config.use_layer_idx]  # (B, T, model_dim)
        x = self.transformer(self.proj(hidden)).mean(dim=1)
        return F.normalize(self.audio_to_latents(x), dim=-1)[:, None, :]


def convert_mulan_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published MuQ-MuLan keys -> ours; the text tower, contrastive loss and unused aggregator are dropped.

    mulan.audio.model.model.* -> muq.* (then as convert_muq_state_dict), mulan.audio.proj.* -> proj.*,
    mulan.audio.transformer.* -> transformer.*, mulan.audio_to_latents.* -> audio_to_latents.*.
    Keys already in our naming pass through.
    """
    renames = (
        ("mulan.audio.model.model.", "muq."),
        ("mulan.audio.proj.", "proj."),
        ("mulan.audio.transformer.", "transformer."),
        ("mulan.audio_to_latents.", "audio_to_latents."),
    )
    ours = ("muq.", "proj.", "transformer.", "audio_to_latents.")
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key.startswith(ours):
            converted[key] = value
    muq_part = convert_muq_state_dict({k[4:]: v for k, v in converted.items() if k.startswith("muq.")})
    rest = {k: v for k, v in converted.items() if not k.startswith("muq.")}
    return rest | {f"muq.{k}": v for k, v in muq_part.items()}
