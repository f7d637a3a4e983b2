"""Tiny random diffusers models, tokenizers and text encoders, built in code (no downloads).

For tests and benchmarks of the scale-out trainer: they show that the code paths run and agree with the node
side, not quality. The tiny Wan transformer has the shapes of dev/tiny_models.py's ComfyUI one (dim 128, one
head, 2 blocks, text_dim 4096: ComfyUI's Wan detector fixes num_heads = dim / 128 and text_dim 4096), so its
weights convert to a ComfyUI model file one to one. diffusers' own tests fetch tokenizers from the hub, which is
unreachable here: the tokenizer is a ``tokenizers`` WordLevel model over a small fixed vocabulary wrapped in
``PreTrainedTokenizerFast`` (words outside it become <unk>).
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
# ComfyUI's tiny HunyuanVideo in dev/tiny_models.py has these widths (hidden 128, one head, 1 + 1 blocks)
HUNYUAN_TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=1, attention_head_dim=128, num_layers=1,
                           num_single_layers=1, num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
                           qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=32, pooled_projection_dim=32,
                           rope_axes_dim=(16, 56, 56))
HUNYUAN_VAE = dict(latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
LLAMA = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
             max_position_embeddings=512)  # 3 layers: HunyuanVideo takes the third-from-last hidden state
CLIP = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
            max_position_embeddings=77)
TEXT_ENCODER = dict(vocab_size=len(VOCAB_WORDS) + 3, d_model=4096, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16,
                    feed_forward_proj="gated-gelu",
                    dense_act_fn="gelu_new", is_gated_act=True, pad_token_id=0, eos_token_id=1)


def _word_level():
    """A ``tokenizers`` WordLevel model over VOCAB_WORDS (ids: <pad> 0, </s> 1, <unk> 2) appending </s>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(VOCAB_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


def tokenizer():
    """Wan's UMT5 tokenizer stand-in over the tiny vocabulary. A PreTrainedTokenizerFast, not a T5TokenizerFast
    wrapper: a pipeline saved with it loads back from its folder (T5TokenizerFast reloads as a Unigram model)."""
    return fast_tokenizer(512)


def fast_tokenizer(max_length: int):
    """PreTrainedTokenizerFast over the tiny vocabulary (HunyuanVideo's Llama and CLIP tokenizer stand-in)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_word_level(), pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


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


def _built(make, seed: int, empty: bool) -> torch.nn.Module:
    """``make()`` seeded, or with ``empty`` its parameters on ``meta`` (no memory; FSDP2 loads them later:
    scaleout/distributed.py's load_sharded)."""
    if not empty:
        return _seeded(make(), seed).eval()
    from accelerate import init_empty_weights

    with init_empty_weights():
        return make().eval()


def wan_transformer(seed: int = 0, empty: bool = False, ti2v_5b: bool = False, **overrides):
    from diffusers import WanTransformer3DModel

    if ti2v_5b:  # Wan 2.2 TI2V-5B's 48 latent channels
        overrides = {"in_channels": 48, "out_channels": 48} | overrides
    return _built(lambda: WanTransformer3DModel(**(WAN_TRANSFORMER | overrides)), seed, empty)


def hunyuan_transformer(seed: int = 0, empty: bool = False, **overrides):
    from diffusers import HunyuanVideoTransformer3DModel

    return _built(lambda: HunyuanVideoTransformer3DModel(**(HUNYUAN_TRANSFORMER | overrides)), seed, empty)


def wan_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    return _seeded(AutoencoderKLWan(**WAN_VAE), seed, std=0.05).eval()


# Wan 2.2 TI2V-5B's VAE layout (48 latent channels, 16x spatial: 2x2 patches over an 8x VAE), tiny widths
WAN22_VAE = dict(base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                 patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48,
                 latents_std=[1.0] * 48)


def wan_pipeline(seed: int = 0, two_experts: bool = False, boundary: float | None = None, ti2v_5b: bool = False,
                 empty: bool = False, **overrides):
    """A tiny WanPipeline (2.1; 2.2 A14B with ``two_experts``: ``transformer`` = high-noise expert seeded
    ``seed + 1``, ``transformer_2`` = low-noise seeded ``seed``, as diffusers' Wan 2.2 folders hold them; 2.2
    TI2V-5B's 48-channel latents and VAE with ``ti2v_5b``); ``empty``: the transformers' parameters on meta."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    low = wan_transformer(seed, empty, ti2v_5b, **overrides)
    high = wan_transformer(seed + 1, empty, ti2v_5b, **overrides) if two_experts else None
    vae = _seeded(AutoencoderKLWan(**WAN22_VAE), seed, std=0.05).eval() if ti2v_5b else wan_vae(seed)
    return WanPipeline(tokenizer=tokenizer(), text_encoder=text_encoder(seed), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=8.0),
                       transformer=high if two_experts else low, transformer_2=low if two_experts else None,
                       boundary_ratio=boundary if two_experts else None)


def hunyuan_pipeline(seed: int = 0, empty: bool = False, **overrides):
    """A tiny HunyuanVideoPipeline: tiny Llama + CLIP text encoders, tiny VAE and transformer (guidance-distilled
    like HunyuanVideo 1.0 T2V: a guidance embedding); ``empty``: the transformer's parameters on meta."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    vocab = len(VOCAB_WORDS) + 3
    llama = LlamaModel(LlamaConfig(vocab_size=vocab, pad_token_id=0, **LLAMA))
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, pad_token_id=0, bos_token_id=0, eos_token_id=1, **CLIP))
    return HunyuanVideoPipeline(text_encoder=_seeded(llama, seed, 0.5).eval(), tokenizer=fast_tokenizer(512),
                                transformer=hunyuan_transformer(seed, empty, **overrides),
                                vae=_seeded(AutoencoderKLHunyuanVideo(**HUNYUAN_VAE), seed, 0.05).eval(),
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=_seeded(clip, seed, 0.5).eval(), tokenizer_2=fast_tokenizer(77))


UNET_MOTION = dict(block_out_channels=(32, 64), layers_per_block=2, in_channels=4, out_channels=4,
                   down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
                   up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), cross_attention_dim=32,
                   num_attention_heads=4, motion_num_attention_heads=4, norm_num_groups=16)
SD_VAE = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def animatediff_unet(seed: int = 0, empty: bool = False, **overrides):
    from diffusers import UNetMotionModel

    return _built(lambda: UNetMotionModel(**(UNET_MOTION | overrides)), seed, empty)


def animatediff_parts(seed: int = 0, empty: bool = False, **overrides):
    """A tiny AnimateDiff: UNetMotionModel (SD1.5 layout, 2 levels), SD VAE, CLIP text encoder and tokenizer, with
    the attribute names of AnimateDiffPipeline (``unet``, ``vae``, ``text_encoder``, ``tokenizer``); ``empty``:
    the UNet's parameters on meta."""
    import types

    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(VOCAB_WORDS) + 3, pad_token_id=0, bos_token_id=0,
                                        eos_token_id=1, **CLIP))
    return types.SimpleNamespace(unet=animatediff_unet(seed, empty, **overrides),
                                 vae=_seeded(AutoencoderKL(**SD_VAE), seed, 0.05).eval(),
                                 text_encoder=_seeded(clip, seed, 0.5).eval(), tokenizer=fast_tokenizer(77))
