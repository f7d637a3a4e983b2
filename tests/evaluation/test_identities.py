"""evaluation/identities.py on a real two-person photo set (face_recognition's Obama and Biden photos, real
w600k_mbf ArcFace + SCRFD): Face Sim per person with faces matched to people, and the identity-bleed rate."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dev.face_assets import load_photo, make_pack
from personalvideo.evaluation.identities import identity_face_similarities
from personalvideo.evaluation.metrics import evaluate_video
from personalvideo.training.identity.reference import build_reference
from personalvideo.training.identity.reward import load_identity_reward_model


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    make_pack(root, "vectron_s")
    return load_identity_reward_model(root / "vectron_s")


@pytest.fixture(scope="module")
def references(identity):
    """Obama from obama2.jpg, Biden from biden.jpg (the only Biden photo in the set)."""
    return {who: build_reference(identity, [load_photo(name)], 2, 0.05, 0.1, 0).embedding
            for who, name in (("obama", "obama2.jpg"), ("biden", "biden.jpg"))}


def side_by_side(left: str, right: str, frames: int = 4) -> torch.Tensor:
    """A clip [F, 320, 512, 3] of two real photos next to each other, drifting apart a little per frame."""
    def photo(name):
        return F.interpolate(load_photo(name).permute(2, 0, 1)[None], size=(320, 240), mode="bilinear")[0]
    a, b = photo(left), photo(right)
    clip = []
    for f in range(frames):
        canvas = torch.zeros(3, 320, 512)
        canvas[:, :, 8 - 2 * f: 248 - 2 * f] = a
        canvas[:, :, 264 + 2 * f: 504 + 2 * f] = b
        clip.append(canvas.permute(1, 2, 0))
    return torch.stack(clip)


def test_each_person_is_matched_to_their_face(identity, references):
    clip = side_by_side("obama.jpg", "biden.jpg")
    result = identity_face_similarities(clip, [references["obama"], references["biden"]], identity)
    assert result.face_sim[0] > 50 and result.face_sim[1] > 50
    assert result.bleed_rate == 0.0 and result.matched == 8 and result.missing_rate(0) == 0.0
    # the matching ignores position: the people swapped score the same
    swapped = identity_face_similarities(side_by_side("biden.jpg", "obama.jpg"),
                                         [references["obama"], references["biden"]], identity)
    assert swapped.face_sim == pytest.approx(result.face_sim, abs=2.0)
    # hand check of one number: person 1's value in frame 0 is 100 x the cosine of the left face with its reference
    faces = sorted(identity.detect(clip[0]), key=lambda f: f.box[0])
    left = identity.embed_faces(clip[:1], faces[:1])[0]
    assert result.per_frame[0][0] == pytest.approx(100 * float(left @ references["obama"]), abs=1e-3)


def test_a_face_closer_to_the_other_person_counts_as_bleed(identity, references):
    """Both faces are Obama: the face matched to Biden is more similar to Obama's reference than to Biden's."""
    clip = side_by_side("obama.jpg", "obama3.jpg")
    result = identity_face_similarities(clip, [references["obama"], references["biden"]], identity,
                                        names=["Obama", "Biden"])
    assert result.matched == 8 and result.bled == 4 and result.bleed_rate == 0.5
    assert result.face_sim[0] > 50 > 30 > result.face_sim[1]


def test_a_missing_person_scores_zero_and_is_counted(identity, references):
    one = torch.stack([F.interpolate(load_photo("obama.jpg").permute(2, 0, 1)[None], size=(320, 256),
                                     mode="bilinear")[0].permute(1, 2, 0)] * 3)
    result = identity_face_similarities(one, [references["obama"], references["biden"]], identity)
    assert result.face_sim[1] == 0.0 and result.missing_rate(1) == 1.0 and result.missing_rate(0) == 0.0
    assert result.bleed_rate == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        identity_face_similarities(one, [references["obama"]], identity)


def test_evaluate_video_from_python_and_the_node(comfy, identity, references):
    clip = side_by_side("obama.jpg", "biden.jpg")
    result = evaluate_video(clip, references["obama"], identity, other_references=[references["biden"]])
    people = result["identities"]
    assert people["names"] == ["identity 1", "identity 2"] and people["bleed_rate"] == 0.0
    assert min(people["face_sim"]) > 50 and json.dumps(result)

    import nodes

    node = nodes.NODE_CLASS_MAPPINGS["PersonalVideoEvaluateVideo"]
    ref_obama = build_reference(identity, [load_photo("obama2.jpg")], 2, 0.05, 0.1, 0)
    ref_biden = build_reference(identity, [load_photo("biden.jpg")], 2, 0.05, 0.1, 0)
    out = node.execute(side_by_side("obama.jpg", "obama3.jpg"), ref_obama, identity, "", 8.0,
                       reference_2=ref_biden)
    table, data = out.args[0], json.loads(out.args[1])
    assert data["identities"]["bleed_rate"] == 0.5
    assert "identity bleed rate" in table and "Face Sim identity 2 (matched)" in table
