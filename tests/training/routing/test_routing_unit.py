"""training/routing: the per-token LoRA, masks on the token grid, face tracking and assignment (no ComfyUI)."""

import numpy as np
import pytest
import torch

from personalvideo.training.identity.detect import Face
from personalvideo.training.routing.faces import (CLOSEST_REFERENCE, LEFT_TO_RIGHT, assign_identities,
                                                  identity_regions, token_frame_groups, track_faces)
from personalvideo.training.routing.matching import best_assignment
from personalvideo.training.routing.regions import (FaceRegion, latent_frame_masks, pool_to_tokens,
                                                    region_token_masks, token_box)
from personalvideo.training.routing.streams import IMAGE, JOINT, TEXT, classify_layers
from personalvideo.training.routing.token_lora import LowRankPair, add_routed_lora


def _layer(seed=0, inp=12, out=10, rank=3, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out, inp, generator=g), LowRankPair(torch.randn(out, rank, generator=g),
                                                            torch.randn(rank, inp, generator=g), scale))


def test_token_weights_select_each_adapters_tokens():
    w, a = _layer(0)
    _, b = _layer(1)
    x = torch.randn(2, 6, 12, generator=torch.Generator().manual_seed(2))
    base = x @ w.T
    only_a = torch.tensor([[1.0, 1, 0, 0, 0, 0]] * 2)
    only_b = torch.tensor([[0.0, 0, 1, 1, 0, 0]] * 2)
    out = add_routed_lora(base.clone(), x, [a, b], [only_a, only_b])
    merged_a = x @ (w + a.scale * a.up @ a.down).T
    merged_b = x @ (w + b.scale * b.up @ b.down).T
    assert torch.equal(out[:, 4:], base[:, 4:])  # weight 0 for every adapter: the base, bit for bit
    assert torch.allclose(out[:, :2], merged_a[:, :2], rtol=1e-5, atol=1e-5)
    assert torch.allclose(out[:, 2:4], merged_b[:, 2:4], rtol=1e-5, atol=1e-5)
    # one adapter alone gives exactly what it gives with the other adapter routed elsewhere
    alone = add_routed_lora(base.clone(), x, [a], [torch.ones(2, 6)])
    assert torch.equal(out[:, :2], alone[:, :2])
    assert not torch.equal(out[:, :2], base[:, :2])


def test_no_weights_cost_nothing_and_inference_adds_in_place():
    w, a = _layer(0)
    x = torch.randn(1, 5, 12)
    with torch.inference_mode():
        base = x @ w.T
        kept = base.clone()
        out = add_routed_lora(base, x, [a], [None])
        assert out is base and torch.equal(out, kept)
        out = add_routed_lora(base, x, [a], [torch.full((1, 5), 0.5)])
        assert out.data_ptr() == base.data_ptr()  # no output-sized temporary in inference
        assert not torch.equal(out, kept)


def test_gradient_reaches_the_adapter_only_through_weighted_tokens():
    w, _ = _layer(0)
    up = torch.randn(10, 3, requires_grad=True)
    down = torch.randn(3, 12, requires_grad=True)
    x = torch.randn(1, 4, 12)
    weights = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    out = add_routed_lora(x @ w.T, x, [LowRankPair(up, down, 0.5)], [weights])
    out[:, 1:].sum().backward()  # tokens of weight 0 carry no gradient to the adapter
    assert torch.count_nonzero(up.grad) == 0 and torch.count_nonzero(down.grad) == 0
    out = add_routed_lora(x @ w.T, x, [LowRankPair(up, down, 0.5)], [weights])
    out[:, :1].sum().backward()
    assert torch.count_nonzero(up.grad) > 0


def test_mask_batches_become_one_mask_per_latent_frame():
    frames = torch.zeros(9, 4, 4)  # 9 video frames -> 3 latent frames (frame 0, then 1-4, 5-8)
    frames[3, 0, 0] = 1.0
    frames[8, 1, 1] = 0.5
    per_latent = latent_frame_masks(frames, 3, 4)
    assert per_latent.shape == (3, 4, 4)
    assert per_latent[1, 0, 0] == 1.0 and per_latent[2, 1, 1] == 0.5 and per_latent[0].sum() == 0
    assert torch.equal(latent_frame_masks(frames[:1], 3, 4), frames[:1].expand(3, 4, 4))
    assert torch.equal(latent_frame_masks(frames[:3], 3, 4), frames[:3])
    with pytest.raises(ValueError, match=r"batch of 5 masks, expected 1 .*3 .*or 9"):
        latent_frame_masks(frames[:5], 3, 4, "identity 1: mask")


def test_pooling_to_tokens_keeps_ones_and_halves():
    assert torch.equal(pool_to_tokens(torch.ones(3, 7, 5), (1, 2, 2)), torch.ones(3, 4, 3))  # padded edges too
    half = torch.zeros(1, 4, 4)
    half[:, :, :1] = 1.0
    assert pool_to_tokens(half, (1, 2, 2)).tolist() == [[[0.5, 0.0], [0.5, 0.0]]]


def test_token_boxes_contain_the_pixel_box():
    gen = np.random.default_rng(0)
    for _ in range(200):
        x1, y1 = gen.uniform(0, 300), gen.uniform(0, 200)
        box = (x1, y1, x1 + gen.uniform(1, 60), y1 + gen.uniform(1, 60))
        r0, c0, r1, c1 = token_box(box, (224, 320), (14, 20))
        assert r0 * 16 <= box[1] and c0 * 16 <= box[0]
        assert r1 * 16 >= min(box[3], 224) and c1 * 16 >= min(box[2], 320)


def test_overlapping_regions_go_to_the_nearer_face():
    left = FaceRegion((0, 0, 64, 32), centre=(16, 16), size=16)
    right = FaceRegion((16, 0, 64, 32), centre=(48, 16), size=16)
    masks = region_token_masks([[left], [right]], (1, 2, 4), (32, 64))
    assert masks.sum(0).max() == 1  # no token gets two adapters
    assert masks[0, 0, 0].tolist() == [1, 1, 0, 0] and masks[1, 0, 0].tolist() == [0, 0, 1, 1]


def face(x, y, s=20.0, score=0.9):
    return Face(np.array([x, y, x + s, y + s], dtype=np.float64), score, np.zeros((5, 2)))


def test_tracks_follow_moving_faces_and_drop_flickers():
    frames = [[face(10 + 2 * f, 10), face(100 - 2 * f, 12)] for f in range(9)]
    frames[4] = frames[4][:1]  # the detector misses the right face once
    frames[6].append(face(60, 80, 8))  # a false detection in one frame
    tracks, short = track_faces(frames)
    assert len(tracks) == 2 and len(short) == 1
    assert tracks[0].centre_x < tracks[1].centre_x
    assert len(tracks[1].faces) == 8 and np.allclose(tracks[1].box_at(4), [92, 12, 112, 32])  # interpolated


def test_assignment_by_order_and_by_reference_and_mismatch_messages():
    tracks, _ = track_faces([[face(10, 10, 15), face(100, 10), face(200, 10, 30)]] * 3)
    by_order = assign_identities(tracks, 2, LEFT_TO_RIGHT)
    assert by_order.track_of == [1, 2] and by_order.extra == [0]  # the two largest, left to right
    message = by_order.mismatch(["identity 1", "identity 2"], tracks)
    assert "found 3 face(s) for 2 identities" in message and "keep the base model" in message
    similarity = np.array([[0.1, 0.7], [0.6, 0.2], [0.0, 0.1]])
    by_reference = assign_identities(tracks, 2, CLOSEST_REFERENCE, similarity)
    assert by_reference.track_of == [1, 0]
    fewer = assign_identities(tracks[:1], 2, LEFT_TO_RIGHT)
    assert fewer.track_of == [0, None]
    assert "no face left for identity 2" in fewer.mismatch(["identity 1", "identity 2"], tracks[:1])
    assert assign_identities(tracks[:2], 2, LEFT_TO_RIGHT).mismatch(["a", "b"], tracks[:2]) is None


def test_regions_cover_the_faces_over_their_latent_frames():
    frames = [[face(10 + 4 * f, 10)] for f in range(9)]
    tracks, _ = track_faces(frames)
    groups = token_frame_groups(3, 4, 1, 9)
    assert groups == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    regions = identity_regions(tracks, assign_identities(tracks, 1, LEFT_TO_RIGHT), groups, (64, 96), 1.0)
    assert regions[0][1].box == (14.0, 10.0, 46.0, 30.0)  # union of the boxes of frames 1-4


def test_best_assignment_is_exact():
    scores = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0]])
    assert best_assignment(scores) == [(0, 1), (1, 0)]  # greedy would take 0.9 and then 0.1
    assert best_assignment(np.array([[0.0, 0.5]]), minimum=0.6) == []


def test_layers_are_classified_by_stream_and_whole_video_layers_refused():
    streams = classify_layers("WAN21_T2V", ["blocks.0.self_attn.q", "blocks.0.cross_attn.k", "blocks.1.ffn.2"])
    assert streams == {"blocks.0.self_attn.q": IMAGE, "blocks.0.cross_attn.k": TEXT, "blocks.1.ffn.2": IMAGE}
    assert classify_layers("HunyuanVideo", ["single_blocks.3.linear1"]) == {"single_blocks.3.linear1": JOINT}
    with pytest.raises(ValueError, match=r"act on the whole video.*double_blocks\.0\.img_mod\.lin"):
        classify_layers("HunyuanVideo", ["double_blocks.0.img_mod.lin"])
    with pytest.raises(ValueError, match="LTXV model"):
        classify_layers("LTXV", ["transformer_blocks.0.attn1.to_q"])
