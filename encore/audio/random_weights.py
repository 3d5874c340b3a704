"""Random-weight encoder folders in the production layout, for tests and speed benchmarks (never for vectors).

`write_random_weights(weights_dir, "muq", size="tiny")` builds the module from a config (tiny: a few small
layers; full: the published architecture), saves config.json + model.safetensors (+ the encoder's extra
files), and returns the folder; encore.audio.get_encoder then loads it like downloaded weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from encore.audio.weights import CONFIG_FILE, WEIGHTS_FILE

SIZES = ("tiny", "full")

_TINY_MUQ = {
    "n_mels": 128,
    "conv_dim": 4,
    "encoder_dim": 32,
    "encoder_depth": 3,
    "w2v2_config": {
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_act": "swish",
        "conv_depthwise_kernel_size": 3,
        "position_embeddings_type": "rotary",
        "rotary_embedding_base": 10000,
        "layer_norm_eps": 1e-5,
    },
}
_TINY_MULAN = {
    "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 8},
    "audio_model": {"name": "OpenMuQ/MuQ-large-msd-iter", "model_dim": 32, "use_layer_idx": -1},
    "audio_transformer": {"dim": 16, "tf_depth": 1, "heads": 2, "dim_head": 8, "ff_mult": 2},
}
_FULL_MULAN = {
    "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 512},
    "audio_model": {"name": "OpenMuQ/MuQ-large-msd-iter", "model_dim": 1024, "use_layer_idx": -1},
    "audio_transformer": {"dim": 768, "tf_depth": 8, "heads": 8, "dim_head": 64, "ff_mult": 4},
}
_TINY_CLAP_AUDIO = {
    "patch_embeds_hidden_size": 8,
    "depths": [1, 1],
    "num_attention_heads": [1, 2],
    "hidden_size": 16,
    "projection_dim": 8,
}


def muq_config(size: str) -> dict[str, Any]:
    from encore.audio.muq import MuQConfig

    return MuQConfig.from_dict(_TINY_MUQ).to_dict() if size == "tiny" else MuQConfig().to_dict()


def write_random_weights(
    weights_dir: str | Path, encoder: str, *, size: str = "tiny", seed: int = 0, published_names: bool = False
) -> Path:
    """Write <weights_dir>/<encoder>/ with random weights; published_names saves the published checkpoint's
    key names (exercising the conversion on load) instead of ours."""
    import torch
    from safetensors.torch import save_file

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    torch.manual_seed(seed)
    folder = Path(weights_dir) / encoder
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, dict[str, Any]] = {}
    if encoder == "muq":
        from encore.audio.muq import MuQ, MuQConfig

        config = muq_config(size)
        state = MuQ(MuQConfig.from_dict(config)).state_dict()
        if published_names:
            state = {f"model.{k}": v for k, v in state.items()} | {"model.cls_token": torch.randn(4)}
    elif encoder == "muq-mulan":
        from encore.audio.mulan import MuLanAudio, MuLanAudioConfig
        from encore.audio.muq import MuQConfig

        config = _TINY_MULAN if size == "tiny" else _FULL_MULAN
        extra["muq_config.json"] = muq_config(size)
        module = MuLanAudio(MuLanAudioConfig.from_dict(config), MuQConfig.from_dict(extra["muq_config.json"]))
        state = module.state_dict()
        if published_names:
            state = _published_mulan_names(state) | {"mulan.text_to_latents.weight": torch.randn(2, 2)}
    elif encoder == "clap":
        from encore.audio.clap import ClapAudio, clap_audio_config

        audio = _TINY_CLAP_AUDIO if size == "tiny" else {}
        config = {"audio_config": audio, "projection_dim": audio.get("projection_dim", 512)}
        state = ClapAudio(clap_audio_config(config)).model.state_dict()
        if published_names:  # a whole ClapModel: the text tower's weights are there too
            state = state | {"text_model.embeddings.word_embeddings.weight": torch.randn(4, 2)}
        extra["preprocessor_config.json"] = {"truncation": "rand_trunc", "padding": "repeatpad"}
    else:
        raise ValueError(f"no random weights for encoder {encoder!r}")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    for name, content in extra.items():
        (folder / name).write_text(json.dumps(content, indent=2))
    return folder


def _published_mulan_names(state: dict[str, Any]) -> dict[str, Any]:
    renames = (
        ("muq.", "mulan.audio.model.model."),
        ("proj.", "mulan.audio.proj."),
        ("transformer.", "mulan.audio.transformer."),
        ("audio_to_latents.", "mulan.audio_to_latents."),
    )
    out = {}
    for key, value in state.items():
        for ours, published in renames:
            if key.startswith(ours):
                out[published + key[len(ours) :]] = value
                break
    return out


_TINY_CLAP_TEXT = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 80,  # >= the query encoder's 64 tokens + RoBERTa's 2 offset positions
}
_TOKENIZER_CORPUS = (
    "classical strings violin piano guitar acoustic mellow rock pop techno metal jazz ambient female male vocals",
    "a slow quiet song with soft singing, a fast loud beat with drums and electronic synth bass",
)


def write_random_clap_with_text(weights_dir: str | Path, seed: int = 0) -> Path:
    """<weights_dir>/clap as a whole tiny ClapModel (both towers, published key names) with a byte-level BPE
    tokenizer.json shaped like RoBERTa's (<s>=0, <pad>=1, </s>=2) whose vocabulary sizes the text tower."""
    import torch
    from safetensors.torch import save_file
    from transformers import ClapConfig, ClapModel

    folder = Path(weights_dir) / "clap"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = random_roberta_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    text = _TINY_CLAP_TEXT | {"vocab_size": tokenizer.get_vocab_size()}
    config = {"text_config": text, "audio_config": _TINY_CLAP_AUDIO, "projection_dim": 8}
    torch.manual_seed(seed)
    state = ClapModel(ClapConfig(**config)).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({"truncation": "rand_trunc"}, indent=2))
    return folder


def random_roberta_tokenizer(vocab_size: int = 320) -> Any:
    """A `tokenizers` byte-level BPE trained on a few music words, with RoBERTa's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return tokenizer
