import math

import pytest
import torch
import torch.nn.functional as F

from kit.train.losses import cross_entropy, dice_loss, pseudo_label_loss


def logits_of(probs: list) -> torch.Tensor:
    """Logits whose softmax over dim 1 is exactly ``probs`` (B, C, H, W), in float64."""
    return torch.tensor(probs, dtype=torch.float64).log()


# (B=1, C=2, H=1, W=2): pixel 0 logits (2, 0), pixel 1 logits (0.5, 1.5)
LOGITS = torch.tensor([[[[2.0, 0.5]], [[0.0, 1.5]]]], dtype=torch.float64)
CE_PIXEL0_CLASS0 = math.log(1 + math.exp(-2.0))  # -log softmax: log(1 + e^(0 - 2))
CE_PIXEL1_CLASS0 = math.log(1 + math.exp(1.0))  # log(1 + e^(1.5 - 0.5))
CE_PIXEL1_CLASS1 = math.log(1 + math.exp(-1.0))


@pytest.mark.parametrize(
    "target, expected",
    [
        ([0, 0], (CE_PIXEL0_CLASS0 + CE_PIXEL1_CLASS0) / 2),
        ([0, 1], (CE_PIXEL0_CLASS0 + CE_PIXEL1_CLASS1) / 2),
        ([0, 255], CE_PIXEL0_CLASS0),  # the ignored pixel leaves the mean
        ([255, 255], 0.0),
    ],
)
def test_cross_entropy_hand_computed(target, expected):
    loss = cross_entropy(LOGITS, torch.tensor([[target]]))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_cross_entropy_all_ignored_is_zero_with_a_gradient():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 4, 5), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_class_weights_hand_computed():
    weight = torch.tensor([1.0, 3.0], dtype=torch.float64)
    loss = cross_entropy(LOGITS, torch.tensor([[[0, 1]]]), weight=weight)
    assert loss.item() == pytest.approx((1 * CE_PIXEL0_CLASS0 + 3 * CE_PIXEL1_CLASS1) / 4, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 13, 9, 11, generator=g, dtype=torch.float64)
    target = torch.randint(0, 13, (2, 9, 11), generator=g)
    target[torch.rand(2, 9, 11, generator=g) < 0.3] = 255
    weight = torch.rand(13, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert cross_entropy(logits, target, weight=weight).item() == pytest.approx(expected.item(), abs=1e-12)


def test_dice_hand_computed():
    # 2 classes, 3 pixels; the third pixel is ignored and must not count
    probs = [[[[0.8, 0.3, 0.5]], [[0.2, 0.7, 0.5]]]]
    target = torch.tensor([[[0, 1, 255]]])
    # class 0: y = (1, 0), p = (0.8, 0.3) → (2·0.8 + 1) / (1 + 1.1 + 1)
    # class 1: y = (0, 1), p = (0.2, 0.7) → (2·0.7 + 1) / (1 + 0.9 + 1)
    expected = ((1 - 2.6 / 3.1) + (1 - 2.4 / 2.9)) / 2
    assert dice_loss(logits_of(probs), target).item() == pytest.approx(expected, abs=1e-12)


def test_dice_averages_over_all_classes_absent_ones_included():
    probs = [[[[0.6, 0.1]], [[0.3, 0.8]], [[0.1, 0.1]]]]  # class 2 is absent from the target
    target = torch.tensor([[[0, 1]]])
    expected = (
        (1 - (2 * 0.6 + 1) / (1 + 0.7 + 1))
        + (1 - (2 * 0.8 + 1) / (1 + 1.1 + 1))
        + (1 - 1 / (0 + 0.2 + 1))  # absent: only its predicted mass costs
    ) / 3
    assert dice_loss(logits_of(probs), target).item() == pytest.approx(expected, abs=1e-12)


def test_dice_averages_images_separately():
    probs_a = [[[0.8, 0.3]], [[0.2, 0.7]]]
    probs_b = [[[0.4, 0.4]], [[0.6, 0.6]]]
    target = torch.tensor([[[0, 1]], [[1, 1]]])
    both = dice_loss(logits_of([probs_a, probs_b]), target)
    one_by_one = (dice_loss(logits_of([probs_a]), target[:1]) + dice_loss(logits_of([probs_b]), target[1:])) / 2
    assert both.item() == pytest.approx(one_by_one.item(), abs=1e-12)


def test_dice_near_zero_for_a_confident_correct_prediction_and_zero_when_all_ignored():
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = 50.0 * F.one_hot(target, 2).permute(0, 3, 1, 2).double()
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-12)
    assert dice_loss(logits, torch.full_like(target, 255)).item() == 0.0


# teacher: 1 image, 2 classes, 2×2 pixels; pixels 0..2 confident (0.99), pixel 3 not (0.6)
TEACHER_PROBS = [[[[0.99, 0.01], [0.01, 0.6]], [[0.01, 0.99], [0.99, 0.4]]]]
PSEUDO = [0, 1, 1, 0]  # teacher argmax, row-major
STUDENT_PROBS = [[[[0.7, 0.4], [0.2, 0.5]], [[0.3, 0.6], [0.8, 0.5]]]]
STUDENT_CE = [-math.log(p) for p in (0.7, 0.6, 0.8, 0.5)]  # -log p_student(pseudo-label)


def test_pseudo_label_weight_is_the_share_of_confident_pixels():
    loss, weight = pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), threshold=0.968)
    assert weight.tolist() == [0.75]
    assert loss.item() == pytest.approx(0.75 * sum(STUDENT_CE) / 4, abs=1e-12)


def test_pseudo_label_pixel_weighting_trains_only_confident_pixels():
    loss, weight = pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), threshold=0.968,
                                     weighting="pixel")
    assert weight.tolist() == [0.75]  # still reported as the confident share
    assert loss.item() == pytest.approx(sum(STUDENT_CE[:3]) / 3, abs=1e-12)  # pixel 3 (0.6) is left out
    nothing = pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), threshold=0.999, weighting="pixel")
    assert nothing[0].item() == 0.0
    with pytest.raises(ValueError, match="weighting"):
        pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), weighting="median")


def test_pseudo_label_teacher_probabilities_equal_teacher_logits():
    student = logits_of(STUDENT_PROBS)
    from_logits = pseudo_label_loss(student, logits_of(TEACHER_PROBS))
    from_probs = pseudo_label_loss(student, torch.tensor(TEACHER_PROBS, dtype=torch.float64), teacher_is_probs=True)
    assert from_probs[0].item() == pytest.approx(from_logits[0].item(), abs=1e-12)
    assert torch.equal(from_probs[1], from_logits[1])


def test_pseudo_label_ignore_mask_leaves_weight_and_mean():
    ignore = torch.tensor([[[False, False], [False, True]]])  # drop the unconfident pixel
    loss, weight = pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), ignore_mask=ignore)
    assert weight.tolist() == [1.0]
    assert loss.item() == pytest.approx(sum(STUDENT_CE[:3]) / 3, abs=1e-12)


def test_pseudo_label_all_ignored_is_zero():
    ignore = torch.ones(1, 2, 2, dtype=torch.bool)
    loss, weight = pseudo_label_loss(logits_of(STUDENT_PROBS), logits_of(TEACHER_PROBS), ignore_mask=ignore)
    assert loss.item() == 0.0
    assert weight.tolist() == [0.0]


def test_pseudo_label_means_over_images_and_no_gradient_reaches_the_teacher():
    confident = [[[[0.99, 0.99], [0.99, 0.99]], [[0.01, 0.01], [0.01, 0.01]]]]  # all class 0, weight 1
    teacher = logits_of(TEACHER_PROBS + confident).requires_grad_()
    student = logits_of(STUDENT_PROBS + STUDENT_PROBS).requires_grad_()
    loss, weight = pseudo_label_loss(student, teacher)
    assert weight.tolist() == [0.75, 1.0]
    ce_all_class0 = [-math.log(p) for p in (0.7, 0.4, 0.2, 0.5)]
    expected = (0.75 * sum(STUDENT_CE) / 4 + 1.0 * sum(ce_all_class0) / 4) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_pseudo_label_class_weighting_keeps_each_class_upper_half():
    # 1 image, 2 classes, 2×3 pixels; teacher's class-0 probability per pixel (row-major):
    # pseudo-labels 0 0 1 / 1 1 0, confidences 0.99 0.99 0.7 / 0.6 0.55 0.8
    t0 = [0.99, 0.99, 0.3, 0.4, 0.45, 0.8]
    s0 = [0.9, 0.8, 0.5, 0.4, 0.3, 0.6]  # student's class-0 probability

    def probs(p0):
        return [[[p0[:3], p0[3:]], [[1 - p for p in p0[:3]], [1 - p for p in p0[3:]]]]]

    student_p = [0.9, 0.8, 0.5, 0.6, 0.7, 0.6]  # student's probability of each pixel's pseudo-label
    ce = [-math.log(p) for p in student_p]
    # class 0: median 0.99 keeps pixels 0, 1 (pixel 5, 0.8, is below it and the threshold);
    # class 1: median 0.6 keeps pixels 2 (0.7) and 3 (0.6), drops pixel 4 (0.55)
    loss, weight = pseudo_label_loss(logits_of(probs(s0)), logits_of(probs(t0)), threshold=0.968, weighting="class")
    assert weight.tolist() == [pytest.approx(4 / 6)]
    assert loss.item() == pytest.approx(sum(ce[:4]) / 4, abs=1e-12)
    pixel, weight = pseudo_label_loss(logits_of(probs(s0)), logits_of(probs(t0)), threshold=0.968, weighting="pixel")
    assert weight.tolist() == [pytest.approx(2 / 6)]
    assert pixel.item() == pytest.approx(sum(ce[:2]) / 2, abs=1e-12)  # pixel mode drops class 1 entirely


@pytest.mark.parametrize(
    "weighting, keep, pixel, share",
    [
        ("image", [[1, 1], [1, 1]], [[0.5, 0.5], [0.5, 0.5]], 0.5),
        ("image", [[1, 1], [1, 0]], [[2 / 3, 2 / 3], [2 / 3, 2 / 3]], 2 / 3),
        ("pixel", [[1, 1], [1, 1]], [[1, 0], [1, 0]], 0.5),
        ("class", [[1, 1], [1, 1]], [[1, 1], [1, 1]], 1.0),  # each class keeps its upper half (median: lower middle)
        ("class", [[1, 0], [1, 1]], [[1, 0], [1, 1]], 1.0),
    ],
)
def test_pseudo_weights_by_hand(weighting, keep, pixel, share):
    from kit.train.losses import pseudo_weights

    confidence = torch.tensor([[[0.99, 0.5], [0.97, 0.2]]])
    pseudo = torch.tensor([[[0, 0], [1, 1]]])
    weights, shares = pseudo_weights(confidence, pseudo, 0.968, torch.tensor([keep]).bool(), weighting)
    torch.testing.assert_close(weights, torch.tensor([pixel], dtype=torch.float32))
    torch.testing.assert_close(shares, torch.tensor([share]))
    with pytest.raises(ValueError, match="weighting"):
        pseudo_weights(confidence, pseudo, 0.968, torch.tensor([keep]).bool(), "share")


def test_batch_weighting_gives_every_image_the_batchs_share_as_daformer():
    """DAFormer/MIC: ``pseudo_weight = sum(confident) / numel(pseudo_label)`` for the whole batch;
    image 0 has 3 of 4 confident pixels, image 1 none: the batch share is 3/8 for both."""
    unsure = [[[[0.6, 0.6], [0.6, 0.6]], [[0.4, 0.4], [0.4, 0.4]]]]  # all class 0 at 0.6: none confident
    teacher = logits_of(TEACHER_PROBS + unsure)
    student = logits_of(STUDENT_PROBS + STUDENT_PROBS)
    loss, weight = pseudo_label_loss(student, teacher, weighting="batch")
    assert weight.tolist() == [pytest.approx(3 / 8), pytest.approx(3 / 8)]
    ce_all_class0 = [-math.log(p) for p in (0.7, 0.4, 0.2, 0.5)]
    per_pixel_mean = (sum(STUDENT_CE) + sum(ce_all_class0)) / 8  # mmseg: (CE · weight).mean() over all pixels
    assert loss.item() == pytest.approx(3 / 8 * per_pixel_mean, abs=1e-12)
    _, per_image = pseudo_label_loss(student, teacher, weighting="image")
    assert per_image.tolist() == [0.75, 0.0]  # the kit's default weighs each image by its own share
