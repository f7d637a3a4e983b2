"""Several identities in one video: each adapter acts only on its own region's tokens (plain torch).

- ``streams``: which adapted layers act on image tokens, on text tokens, or on both (per model family);
- ``token_lora``: the activation-space LoRA with a weight per token, ``out + sum_i w_i * s_i * up_i(down_i(x))``;
- ``regions``: region masks (given masks or face boxes) on the latent's token grid;
- ``faces``: tracking detected faces over frames and assigning them to identities;
- ``matching``: the exact best assignment (Hungarian) used by tracking, assignment and evaluation.
"""
