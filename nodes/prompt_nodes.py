"""Prompt nodes: the prompt bank for simulated prompt augmentation.

Thin glue over training/prompts.py. The bank carries texts only; the trainer encodes them with the
graph's CLIP.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..training.prompts import BUILT_IN_PROMPTS, DEFAULT_NEGATIVE, build_prompt_bank
from .types import TRAINING_CATEGORY, PromptBankType

PREVIEW_LINES = 5


class PromptBank(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoPromptBank",
            display_name="Prompt Bank",
            category=TRAINING_CATEGORY,
            description=f"The prompts the trainer samples one of at each step: {len(BUILT_IN_PROMPTS)} built-in "
                        "prompts (actions, places, lighting, camera moves, styles) and your own, with the subject "
                        "filled in, plus a negative prompt.",
            inputs=[
                io.String.Input("subject", default="a person",
                                tooltip="Who the videos show, e.g. 'a woman', 'a man', 'an old man'; replaces "
                                        "{subject} in every prompt. Describe the kind of person, not the photo."),
                io.String.Input("user_prompts", default="", multiline=True,
                                tooltip="Your own prompts, one per line. {subject} is replaced by the subject; "
                                        "a line without it is used as written. Blank lines and lines starting "
                                        "with # are ignored."),
                io.String.Input("negative_prompt", default=DEFAULT_NEGATIVE, multiline=True,
                                tooltip="Negative prompt used at every training step (may be empty)."),
                io.Boolean.Input("use_built_in", default=True,
                                 tooltip=f"Include the {len(BUILT_IN_PROMPTS)} built-in prompts before yours. "
                                         "Off: only user_prompts are used."),
            ],
            outputs=[
                PromptBankType.Output(display_name="prompt_bank",
                                      tooltip="The prompt texts and the negative prompt, for the trainer (which "
                                              "encodes them with the graph's CLIP)."),
                io.String.Output(display_name="preview",
                                 tooltip="The number of prompts and the first few, subject filled in."),
            ],
        )

    @classmethod
    def execute(cls, subject, user_prompts, negative_prompt, use_built_in) -> io.NodeOutput:
        bank = build_prompt_bank(subject, user_prompts, negative_prompt, use_built_in)
        lines = [f"{len(bank)} prompts (subject: {bank.subject!r})"]
        lines += [f"{i + 1}. {p}" for i, p in enumerate(bank.prompts[:PREVIEW_LINES])]
        if len(bank) > PREVIEW_LINES:
            lines.append(f"... and {len(bank) - PREVIEW_LINES} more")
        lines.append(f"negative: {bank.negative}")
        return io.NodeOutput(bank, "\n".join(lines))


NODES = [PromptBank]
