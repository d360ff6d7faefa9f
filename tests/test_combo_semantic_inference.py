"""Mask classification -> per-pixel class scores and the evaluator's probabilities, against COMBO.

Fixture: ``combo/fixtures/semantic_inference.pt``, case ``binary`` (K = 2, padded 64x64 input,
image 60x62, output 90x93) and case ``avss`` (K = 71); tolerances from its README.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import load_fixture
from torch.testing import assert_close

from avsegformer.modeling.mask_classification import (
    class_probabilities,
    foreground_probability,
    semantic_inference,
    semantic_segmentation,
)

# README tolerances (rtol 1e-4): sem_seg, prob.
TOLERANCES = {"binary": (3e-05, 5e-06), "avss": (1e-06, 1e-06)}


@pytest.fixture(scope="module")
def cases():
    return load_fixture("combo/fixtures/semantic_inference.pt")["cases"]


def _segment(case):
    inputs = case["inputs"]
    num_frames = inputs["pred_logits"].shape[0]
    return torch.stack(
        semantic_segmentation(
            inputs["pred_logits"],
            inputs["pred_masks"],
            padded_size=tuple(case["padded_size"]),
            image_sizes=[tuple(case["image_size"])] * num_frames,
            output_sizes=[tuple(case["output_size"])] * num_frames,
            frame_flags=inputs["flag"],
        )
    )


@pytest.mark.parametrize("name", ["binary", "avss"])
def test_scores_at_padded_and_output_size_match_reference(cases, name):
    case = cases[name]
    atol_scores, _ = TOLERANCES[name]
    inputs, expected = case["inputs"], case["outputs"]
    upsampled = F.interpolate(
        inputs["pred_masks"], size=tuple(case["padded_size"]), mode="bilinear", align_corners=False
    )
    padded = semantic_inference(inputs["pred_logits"], upsampled)
    assert_close(padded, expected["sem_seg_padded"], atol=atol_scores, rtol=1e-4)
    scores = _segment(case)
    assert scores.shape == expected["sem_seg"].shape
    assert_close(scores, expected["sem_seg"], atol=atol_scores, rtol=1e-4)


def test_binary_foreground_probability_matches_reference(cases):
    case = cases["binary"]
    _, atol_prob = TOLERANCES["binary"]
    scores = _segment(case)
    assert_close(class_probabilities(scores), case["outputs"]["prob"], atol=atol_prob, rtol=1e-4)
    fg = foreground_probability(scores)
    assert fg.shape == (2, 1, 90, 93)
    assert_close(fg, case["outputs"]["fg_prob"], atol=atol_prob, rtol=1e-4)
    assert_close(fg[:, 0], torch.sigmoid(scores[:, 1] - scores[:, 0]), atol=1e-6, rtol=0)


def test_avss_class_probabilities_and_prediction_match_reference(cases):
    case = cases["avss"]
    _, atol_prob = TOLERANCES["avss"]
    probs = class_probabilities(_segment(case))
    assert_close(probs, case["outputs"]["prob"], atol=atol_prob, rtol=1e-4)
    assert torch.equal(probs.argmax(1), case["outputs"]["argmax"])


def test_frame_flags_scale_each_frame(cases):
    case = cases["avss"]
    inputs = case["inputs"]
    size = tuple(case["padded_size"])
    common = {"padded_size": size, "image_sizes": [size] * 2, "output_sizes": [size] * 2}
    flagged = semantic_segmentation(
        inputs["pred_logits"], inputs["pred_masks"], frame_flags=torch.tensor([1.0, 0.0]), **common
    )
    plain = semantic_segmentation(inputs["pred_logits"], inputs["pred_masks"], **common)
    assert torch.equal(flagged[0], plain[0])
    assert torch.count_nonzero(plain[1]) > 0 and torch.count_nonzero(flagged[1]) == 0
    # A zeroed frame carries no decision: every class is equally likely.
    probs = class_probabilities(flagged[1][None])
    assert_close(probs, torch.full_like(probs, 1 / 71))


def test_bad_inputs_raise_clear_errors(cases):
    inputs = cases["binary"]["inputs"]
    with pytest.raises(ValueError, match="disagree on N or Q"):
        semantic_inference(inputs["pred_logits"][:, :3], inputs["pred_masks"])
    with pytest.raises(ValueError, match="2 frames but 1 image sizes"):
        semantic_segmentation(
            inputs["pred_logits"],
            inputs["pred_masks"],
            padded_size=(16, 16),
            image_sizes=[(16, 16)],
            output_sizes=[(16, 16)] * 2,
        )
    with pytest.raises(ValueError, match="background/object scores"):
        foreground_probability(torch.zeros(1, 3, 4, 4))
