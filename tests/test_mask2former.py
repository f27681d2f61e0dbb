"""Mask2Former (kit.models.mask2former): the semantic read-out, label → mask conversion, the matching loss,
learning one batch, and the kit's prediction path (slide windows, submission)."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kit.competition.rle import SubmissionWriter, rle_decode
from kit.models.mask2former import MaskPredictions, label_masks, semantic_probabilities
from kit.models.model import create_model
from kit.predict.splits import to_label_map
from kit.predict.tta import predict_whole, slide_predict

TINY = dict(channels=32, queries=8, layers=2, encoder_layers=1, heads=4, feedforward=64, points=256)


def _model(encoder="internimage_tiny", seed=0):
    torch.manual_seed(seed)
    return create_model("mask2former", encoder, num_classes=13, **TINY)


@pytest.mark.parametrize("encoder", ["internimage_tiny", "resnet18"])
def test_eval_output_is_log_probabilities_at_the_input_size(encoder):
    model = _model(encoder).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 13, 64, 96)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 64, 96), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [None, (12, 20)])
def test_semantic_probabilities_equal_a_loop_over_queries(size):
    g = torch.Generator().manual_seed(0)
    classes, masks = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 6, 10, generator=g)  # K = 3 + no-object
    expected = torch.zeros(2, 3, 6, 10)
    for b in range(2):
        for q in range(5):
            p = torch.softmax(classes[b, q], 0)
            for k in range(3):
                expected[b, k] += p[k] * torch.sigmoid(masks[b, q])
    if size is not None:
        expected = F.interpolate(expected, size=size, mode="bilinear", align_corners=False)
    expected = expected / expected.sum(1, keepdim=True)
    torch.testing.assert_close(semantic_probabilities(classes, masks, size), expected)


def test_label_masks_one_mask_per_class_present_background_included_ignored_in_none():
    labels = torch.tensor([[[3, 3, 12, 255], [0, 3, 12, 255], [0, 0, 12, 12]],
                           [[255] * 4] * 3])
    masks, classes = label_masks(labels, num_classes=13)
    assert classes[0].tolist() == [0, 3, 12]
    assert masks[0].tolist() == [[[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]],
                                 [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
                                 [[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1]]]
    assert masks[0][:, :2, 3].sum() == 0  # the ignored pixels
    assert masks[1].shape == (0, 3, 4) and classes[1].numel() == 0
    with pytest.raises(ValueError, match="label value 13 is no class of 0..12"):
        label_masks(torch.full((1, 2, 2), 13), num_classes=13)


def _predictions_of(labels: torch.Tensor, queries: int, num_classes: int, layers: int = 2) -> MaskPredictions:
    """Confident predictions that are exactly ``labels``: query i predicts the i-th class present."""
    b, h, w = labels.shape
    classes = torch.full((layers, b, queries, num_classes + 1), -10.0)
    classes[..., num_classes] = 10.0  # unused queries: no object
    masks = torch.full((layers, b, queries, h // 4, w // 4), -10.0)
    small = labels[:, 2::4, 2::4]  # stride 4, as the head predicts
    for i, present in enumerate(label_masks(labels, num_classes)[1]):
        for q, c in enumerate(present):
            classes[:, i, q] = -10.0
            classes[:, i, q, c] = 10.0
            masks[:, i, q] = torch.where(small[i] == c, 10.0, -10.0)
    return MaskPredictions(classes, masks)


def test_the_matching_loss_of_a_perfect_prediction_is_below_a_shuffled_one():
    head = _model().decode_head
    labels = torch.full((2, 64, 96), 12)
    labels[:, :32, :48], labels[0, 40:, 60:], labels[1, 10:30, 50:90] = 0, 3, 7
    perfect = _predictions_of(labels, queries=8, num_classes=13)
    shuffled = MaskPredictions(perfect.classes.clone(), perfect.masks.clone())
    shuffled.classes[:, :, :3] = perfect.classes[:, :, [1, 2, 0]]  # each mask now says another class
    torch.manual_seed(0)
    good = sum(head.losses(perfect, labels).values())
    torch.manual_seed(0)
    bad = sum(head.losses(shuffled, labels).values())
    assert bad > 10 * good, (good, bad)  # measured 3.5 (mask edges at stride 4) against 72


def test_a_few_steps_learn_one_batch():
    model = _model().train()
    images = torch.randn(2, 3, 64, 96)
    labels = torch.full((2, 64, 96), 12)
    labels[:, :, :48], labels[:, 16:48, 56:88] = 0, 3
    images[:, 0] += 2.0 * (labels == 0)  # the classes are visible in the image
    images[:, 1] += 2.0 * (labels == 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        total = sum(model.decode_head.losses(model(images), labels).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert losses[-1] < 0.35 * losses[0], losses  # measured 36 → 9.4
    assert accuracy > 0.9, accuracy  # measured 0.97 (0.68 after 20 steps)


def test_it_goes_through_slide_prediction_and_the_submission_writer(tmp_path):
    model = _model().eval()
    images = torch.randn(2, 3, 64, 96)
    whole = predict_whole(model, images)
    one_window = slide_predict(model, images, window=(64, 96), stride=(32, 48))
    torch.testing.assert_close(one_window, whole, atol=1e-5, rtol=0)
    slid = slide_predict(model, images, window=(32, 64), stride=(16, 32))
    torch.testing.assert_close(slid.sum(1), torch.ones(2, 64, 96), atol=1e-5, rtol=0)

    sample = tmp_path / "sample_submission.csv"
    with open(sample, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "mask_rle"])
        writer.writerows([f"TEST_{i:04d}_class_{c}", "-1"] for i in range(2) for c in range(12))
    maps = [to_label_map(p) for p in slid]
    with SubmissionWriter(tmp_path / "submission.csv", sample, size=(96, 64)) as out:
        for i, label_map in enumerate(maps):
            out.add(f"TEST_{i:04d}", label_map)
    rows = {r["id"]: r["mask_rle"] for r in csv.DictReader(open(tmp_path / "submission.csv"))}
    for i, label_map in enumerate(maps):
        for c in range(12):
            torch.testing.assert_close(rle_decode(rows[f"TEST_{i:04d}_class_{c}"], (64, 96)),
                                       (label_map == c).astype(np.uint8))


def test_the_state_dict_round_trips_without_the_no_object_weight():
    model, other = _model(seed=0).eval(), _model(seed=1).eval()
    state = model.state_dict()
    assert not any("empty_weight" in k for k in state)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.allclose(model(x), other(x))
        other.load_state_dict(state)
        torch.testing.assert_close(other(x), model(x))


def test_channels_that_group_norm_cannot_split_are_refused():
    with pytest.raises(ValueError, match="mask2former channels = 40: expected a multiple of 32"):
        create_model("mask2former", "internimage_tiny", **{**TINY, "channels": 40})
