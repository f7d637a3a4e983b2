"""Tiny random diffusers models, tokenizers and text encoders, built in code (no downloads).

For tests and benchmarks of the scale-out trainer: they show that the code paths run and agree with the node
side, not quality. The tiny Wan transformer has the shapes of dev/tiny_models.py's ComfyUI one (dim 128, one
head, 2 blocks, text_dim 4096: ComfyUI's Wan detector fixes num_heads = dim / 128 and text_dim 4096), so its
weights convert to a ComfyUI checkpoint one to one. diffusers' own tests fetch tokenizers from the hub, which is
unreachable here: the tokenizer is a ``tokenizers`` WordLevel model over a small fixed vocabulary wrapped in
``T5TokenizerFast`` (words outside it become <unk>).
"""

from __future__ import annotations

import torch

# the words of the built-in prompt bank's kind of prompts; everything else is <unk>
VOCAB_WORDS = ("a an the man woman person people face smiling walking running sitting standing on in at with of "
               "and beach street park city room portrait close-up light sunset night rain snow camera video "
               "blurry low quality bad").split()
WAN_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=256, num_layers=2, cross_attn_norm=True,
                       qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True])
TEXT_ENCODER = dict(vocab_size=len(VOCAB_WORDS) + 3, d_model=4096, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
                    dense_act_fn="gelu_new", is_gated_act=True, pad_token_id=0, eos_token_id=1)
TEXT_TOKENS = 16  # max_sequence_length of the tiny text encoding (real Wan: 512)


def tokenizer():
    """A T5TokenizerFast over VOCAB_WORDS (ids: <pad> 0, </s> 1, <unk> 2), appending </s> like T5's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(VOCAB_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def _seeded(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Every floating tensor redrawn from ``seed`` (norm scales 1): the same model for a seed on any machine."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if not tensor.dtype.is_floating_point:
                continue
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
            if leaf in ("gamma", "scale") or ("norm" in parent and leaf == "weight"):
                tensor.fill_(1.0)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return module


def text_encoder(seed: int = 0):
    from transformers import UMT5Config, UMT5EncoderModel

    return _seeded(UMT5EncoderModel(UMT5Config(**TEXT_ENCODER)), seed, std=0.5).eval()


def wan_transformer(seed: int = 0, **overrides):
    from diffusers import WanTransformer3DModel

    return _seeded(WanTransformer3DModel(**(WAN_TRANSFORMER | overrides)), seed).eval()


def wan_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    return _seeded(AutoencoderKLWan(**WAN_VAE), seed, std=0.05).eval()


def wan_pipeline(seed: int = 0, two_experts: bool = False, boundary: float | None = None, **overrides):
    """A tiny WanPipeline (2.1, or 2.2 A14B with ``two_experts``: ``transformer`` = high-noise expert seeded
    ``seed + 1``, ``transformer_2`` = low-noise seeded ``seed``, as diffusers' Wan 2.2 folders hold them)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    low = wan_transformer(seed, **overrides)
    high = wan_transformer(seed + 1, **overrides) if two_experts else None
    return WanPipeline(tokenizer=tokenizer(), text_encoder=text_encoder(seed), vae=wan_vae(seed),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=8.0),
                       transformer=high if two_experts else low, transformer_2=low if two_experts else None,
                       boundary_ratio=boundary if two_experts else None)
