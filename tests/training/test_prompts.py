"""The prompt bank: built-in prompts, filling the subject, user prompts, seeded sampling, and the node."""

from __future__ import annotations

import dataclasses
import re

import pytest
from comfy_runtime_errors import graph_error
from personalvideo.training.prompts import BUILT_IN_PROMPTS, DEFAULT_NEGATIVE, PromptBank, build_prompt_bank


def test_built_ins_are_many_distinct_and_have_one_placeholder_each():
    assert len(BUILT_IN_PROMPTS) >= 50
    assert len(set(BUILT_IN_PROMPTS)) == len(BUILT_IN_PROMPTS)
    for prompt in BUILT_IN_PROMPTS:
        assert prompt.count("{subject}") == 1, prompt
        assert prompt == prompt.strip() and "{" not in prompt.replace("{subject}", "")


def test_built_ins_do_not_describe_the_reference_photo():
    banned = re.compile(r"\b(photo|photograph|picture|reference|portrait|selfie)\b", re.IGNORECASE)
    for prompt in BUILT_IN_PROMPTS:
        assert not banned.search(prompt), prompt


def test_subject_is_filled_everywhere():
    bank = build_prompt_bank("a woman", "", "blurry")
    assert len(bank) == len(BUILT_IN_PROMPTS)
    assert bank.prompts[0] == BUILT_IN_PROMPTS[0].replace("{subject}", "a woman")
    assert all("{subject}" not in p and "a woman" in p for p in bank.prompts)
    assert bank.subject == "a woman" and bank.negative == "blurry"


def test_user_prompts_with_and_without_placeholder_comments_blanks_and_duplicates():
    text = ("# my prompts\n"
            "\n"
            "  {subject} juggles oranges in a kitchen  \n"
            "a dog chases a ball on a lawn\n"
            "   # indented comment\n"
            "{subject} juggles oranges in a kitchen\n"
            "a dog chases a ball on a lawn\n")
    bank = build_prompt_bank(" a  man ", text, "  static  ", use_built_in=False)
    assert bank.prompts == ("a man juggles oranges in a kitchen", "a dog chases a ball on a lawn")
    assert bank.subject == "a man" and bank.negative == "static"


def test_user_prompts_follow_built_ins_and_duplicates_of_built_ins_collapse():
    again = BUILT_IN_PROMPTS[3]
    bank = build_prompt_bank("a man", f"{again}\n{{subject}} sings in a choir", "")
    assert len(bank) == len(BUILT_IN_PROMPTS) + 1
    assert bank.prompts[-1] == "a man sings in a choir"


def test_user_prompt_without_placeholder_needs_no_subject():
    bank = build_prompt_bank("", "a crowd dances at a street festival", "", use_built_in=False)
    assert bank.prompts == ("a crowd dances at a street festival",)


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n#another"])
def test_empty_bank_raises_naming_the_input_and_the_fix(text):
    with pytest.raises(ValueError) as info:
        build_prompt_bank("a woman", text, "", use_built_in=False)
    message = str(info.value)
    assert "user_prompts" in message and "got no prompts" in message and "use_built_in" in message


@pytest.mark.parametrize("use_built_in, text", [(True, ""), (False, "{subject} waves")])
def test_empty_subject_raises_when_a_prompt_needs_it(use_built_in, text):
    with pytest.raises(ValueError, match=r"subject: got an empty subject.*'a woman'"):
        build_prompt_bank("   ", text, "", use_built_in=use_built_in)


def test_bank_is_frozen_and_never_empty():
    bank = build_prompt_bank("a woman", "", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        bank.subject = "a man"
    with pytest.raises(ValueError):
        PromptBank(prompts=(), negative="", subject="a woman")


def test_seeded_sampling_repeats_and_covers_every_prompt_each_epoch():
    bank = build_prompt_bank("a woman", "", "")
    n = len(bank)
    first = [bank.sample(seed=7, step=s) for s in range(3 * n)]
    assert first == [bank.sample(seed=7, step=s) for s in range(3 * n)]
    for epoch in range(3):
        assert sorted(first[epoch * n:(epoch + 1) * n]) == sorted(bank.prompts)
    assert first[:n] != first[n:2 * n]  # each epoch is reshuffled
    assert first != [bank.sample(seed=8, step=s) for s in range(3 * n)]
    # Pinned values: the sequence must not change between versions (a resumed run depends on it).
    small = build_prompt_bank("", "\n".join(f"p{i}" for i in range(5)), "", use_built_in=False)
    assert [small.sample(0, s) for s in range(10)] == ["p3", "p2", "p0", "p4", "p1", "p3", "p0", "p1", "p4", "p2"]
    with pytest.raises(ValueError, match="step"):
        bank.sample(seed=0, step=-1)


# --- the node in a real ComfyUI -------------------------------------------------------------------

def _graph(**inputs) -> dict:
    node = {"subject": "a woman", "user_prompts": "", "negative_prompt": DEFAULT_NEGATIVE, "use_built_in": True}
    node.update(inputs)
    return {"1": {"class_type": "PersonalVideoPromptBank", "inputs": node},
            "2": {"class_type": "PersonalVideoDevCapture", "inputs": {"value": ["1", 0], "key": "bank"}},
            "3": {"class_type": "PersonalVideoDevCapture", "inputs": {"value": ["1", 1], "key": "bank_preview"}}}


def test_prompt_bank_node_in_comfy(comfy):
    comfy.run(_graph(subject="a man", user_prompts="# extra\n{subject} rows a boat on a river\n",
                     negative_prompt="blurry, static"))
    bank = comfy.captured()["bank"]
    preview = comfy.captured()["bank_preview"]
    # ComfyUI loads the pack under its own module name, so compare fields, not the class object.
    assert type(bank).__name__ == "PromptBank"
    assert len(bank.prompts) == len(BUILT_IN_PROMPTS) + 1
    assert bank.prompts[0] == BUILT_IN_PROMPTS[0].replace("{subject}", "a man")
    assert bank.prompts[-1] == "a man rows a boat on a river"
    assert bank.negative == "blurry, static" and bank.subject == "a man"
    assert bank.sample(3, 10) == build_prompt_bank("a man", "{subject} rows a boat on a river", "").sample(3, 10)
    assert preview.startswith(f"{len(BUILT_IN_PROMPTS) + 1} prompts") and bank.prompts[0] in preview


def test_empty_prompt_bank_fails_in_comfy_with_a_clear_message(comfy):
    with graph_error() as err:
        comfy.run(_graph(user_prompts="# nothing here\n", use_built_in=False))
    assert "user_prompts" in err.message and "got no prompts" in err.message and "use_built_in" in err.message
