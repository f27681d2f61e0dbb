"""Mask2Former (kit.models.mask2former): the semantic read-out, label → mask conversion, the matching loss,
learning one batch, and the kit's prediction path (slide windows, submission)."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Mask2FormerImageProcessor
from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

from kit.competition.rle import rle_decode
from kit.competition.submission import SubmissionWriter
from kit.models.mask2former import READ_OUT_QUERIES, MaskPredictions, label_masks, semantic_probabilities
from kit.models.model import create_model
from kit.predict.splits import to_label_map
from kit.predict.tta import predict_whole, slide_predict

TINY = dict(channels=32, queries=8, layers=2, encoder_layers=1, heads=4, feedforward=64, points=256)


def _model(encoder="internimage_tiny", seed=0):
    torch.manual_seed(seed)
    return create_model("mask2former", encoder, num_classes=13, **TINY)


def read_out_loop(classes, masks, size):
    """The original's semantic_inference, a query and a class at a time: mask logits upsampled
    (bilinear) to ``size``, sigmoid, weighted by the class softmax without no-object; then the kit's
    normalisation over classes."""
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    b, q, k = classes.shape[0], classes.shape[1], classes.shape[2] - 1
    scores = torch.zeros(b, k, *size)
    for i in range(b):
        for j in range(q):
            p = torch.softmax(classes[i, j], 0)
            for c in range(k):
                scores[i, c] += p[c] * torch.sigmoid(masks[i, j])
    scores = scores.clamp_min(1e-6)  # a pixel no query claims: uniform (the kit's rule), not 0 / 0
    return scores / scores.sum(1, keepdim=True)


@pytest.mark.parametrize("encoder", ["internimage_tiny", "resnet18"])
def test_eval_output_is_the_log_of_the_last_layers_read_out_at_the_input_size(encoder):
    model = _model(encoder).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out, predictions = model(x), model.decode_head(model.encoder(x))
    assert out.shape == (2, 13, 64, 96)
    expected = read_out_loop(predictions.classes[-1], predictions.masks[-1], (64, 96))
    torch.testing.assert_close(out.softmax(1), expected)  # the kit's prediction takes a softmax of the output


@pytest.mark.parametrize("size", [None, (12, 20), (9, 7)])  # None: the masks' own 6×10
def test_semantic_probabilities_equal_a_loop_over_queries(size):
    g = torch.Generator().manual_seed(0)
    classes, masks = torch.randn(2, 5, 4, generator=g), 4 * torch.randn(2, 5, 6, 10, generator=g)  # K = 3 + no-object
    expected = read_out_loop(classes, masks, size or (6, 10))
    torch.testing.assert_close(semantic_probabilities(classes, masks, size), expected)


def test_semantic_probabilities_read_out_many_queries_a_chunk_at_a_time():
    """More queries than one chunk of READ_OUT_QUERIES (solution B has 200): every chunk counts once."""
    g = torch.Generator().manual_seed(2)
    queries = 2 * READ_OUT_QUERIES + 3
    classes, masks = torch.randn(1, queries, 4, generator=g), 4 * torch.randn(1, queries, 3, 5, generator=g)
    torch.testing.assert_close(semantic_probabilities(classes, masks, (7, 9)), read_out_loop(classes, masks, (7, 9)))


def test_semantic_probabilities_equal_transformers_post_processing():
    """transformers reads out at its processor's 384×384: there the two must agree exactly."""
    g = torch.Generator().manual_seed(1)
    classes, masks = torch.randn(2, 6, 5, generator=g), 4 * torch.randn(2, 6, 96, 96, generator=g)  # stride 4
    output = Mask2FormerForUniversalSegmentationOutput(class_queries_logits=classes, masks_queries_logits=masks)
    processed = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        output, target_sizes=[(384, 384)] * 2, return_segmentation_scores=True)
    scores = torch.stack([p.segmentation_scores for p in processed]).clamp_min(1e-6)  # (2, 4, 384, 384)
    probs = semantic_probabilities(classes, masks, (384, 384))
    torch.testing.assert_close(probs, scores / scores.sum(1, keepdim=True))
    assert torch.equal(probs.argmax(1), torch.stack([p.segmentation for p in processed]))


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


def test_an_all_ignored_image_is_only_a_no_object_class_loss():
    """No class present: every query is matched to nothing, so the loss is the class cross-entropy
    of "no object" for every query (its weight cancels in a mean over no-object targets alone), no
    mask or Dice term, and finite gradients that leave the masks alone."""
    model = _model().train()
    predictions = model(torch.randn(2, 3, 64, 96))
    for logits in predictions:  # classes (L, B, Q, 14), masks (L, B, Q, 16, 24)
        logits.retain_grad()
    losses = model.decode_head.losses(predictions, torch.full((2, 64, 96), 255))
    no_object = -predictions.classes.detach().log_softmax(-1)[..., -1]  # (L, B, Q)
    torch.testing.assert_close(losses["class"], 2.0 * no_object.mean(dim=(1, 2)).sum())
    assert losses["mask"].item() == 0.0 and losses["dice"].item() == 0.0
    sum(losses.values()).backward()
    assert predictions.classes.grad.isfinite().all() and predictions.classes.grad.abs().sum() > 0
    assert torch.equal(predictions.masks.grad, torch.zeros_like(predictions.masks))
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())


@pytest.mark.slow
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
