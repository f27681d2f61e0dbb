import numpy as np
import pytest
import torch

from kit.competition.metrics import confusion_matrix, iou_per_class, iou_table, mean_iou


def slow_iou(pred: np.ndarray, target: np.ndarray, ignore_background: bool = False) -> list[float]:
    """Per-pixel loops, the competition's rule written out plainly: for each class c,
    TP = truth c and pred c; FP = pred c and truth not c (background included); FN = truth c and pred not c."""
    ious = []
    for c in range(12):
        tp = fp = fn = 0
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if ignore_background and t == 255:
                continue
            if p == c and t == c:
                tp += 1
            elif p == c:
                fp += 1
            elif t == c:
                fn += 1
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
    return ious


def test_hand_computed_example_background_is_a_false_positive():
    target = np.array([[0, 0, 255, 255], [1, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 0, 0, 12], [1, 1, 0, 255]], np.uint8)
    cm = confusion_matrix(pred, target)
    ious = iou_per_class(cm)
    # class 0: TP 2, FP 2 (one on background, one on class 1) → 2/4
    assert ious[0] == pytest.approx(0.5)
    # class 1: TP 2, FN 1 → 2/3
    assert ious[1] == pytest.approx(2 / 3)
    assert np.isnan(ious[2:]).all()
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3) / 2)
    # ignoring background drops the false positive on the 255 pixel: class 0 → 2/3
    assert iou_per_class(confusion_matrix(pred, target, ignore_background=True))[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ignore_background", [False, True])
def test_matches_slow_per_pixel_reference(seed, ignore_background):
    rng = np.random.default_rng(seed)
    classes = rng.choice(12, size=5, replace=False)  # most classes absent from both
    target = rng.choice(np.append(classes, 255), size=(2, 17, 23)).astype(np.uint8)
    pred = rng.choice(np.append(classes[:4], [rng.integers(0, 12), 12, 255]), size=(2, 17, 23)).astype(np.uint8)
    ours = iou_per_class(confusion_matrix(pred, target, ignore_background=ignore_background))
    ref = slow_iou(pred, target, ignore_background)
    np.testing.assert_allclose(ours, ref, equal_nan=True)
    assert mean_iou(confusion_matrix(pred, target, ignore_background=ignore_background)) == pytest.approx(
        np.nanmean(ref)
    )


def test_accumulates_over_batches_from_numpy_and_torch():
    rng = np.random.default_rng(7)
    target = rng.choice([0, 3, 8, 255], size=(4, 9, 11)).astype(np.uint8)
    pred = rng.integers(0, 13, size=(4, 9, 11)).astype(np.uint8)
    whole = confusion_matrix(pred, target)
    cm = np.zeros((13, 13), np.int64)
    confusion_matrix(pred[:2], target[:2], out=cm)
    confusion_matrix(torch.from_numpy(pred[2:]).long(), torch.from_numpy(target[2:]).long(), out=cm)
    assert np.array_equal(cm, whole)
    assert cm.sum() == pred.size


def test_rejects_bad_target_values_and_shapes():
    with pytest.raises(ValueError, match=r"\[37\]"):
        confusion_matrix(np.zeros((2, 2)), np.array([[0, 37], [1, 2]]))
    with pytest.raises(ValueError, match=r"\[37\]"):
        confusion_matrix(torch.zeros(2, 2), torch.tensor([[0, 37], [1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))


def test_iou_table_names_every_class():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]))
    table = iou_table(cm)
    assert list(table)[:2] == ["Road", "Sidewalk"] and len(table) == 13
    assert table["Road"] == pytest.approx(0.5) and table["mIoU"] == pytest.approx(0.5)
