"""The confusion matrix follows MMDetection's analysis tool, worked out by hand."""

import numpy as np
import pytest

from services.trainer.confusion import box_iou, confusion_matrix, to_event

# Classes: 0 = cat, 1 = dog, index 2 = background.


def test_hand_worked_example() -> None:
    # Image 1: a cat box and a dog box side by side; a wide cat detection
    # covers both (IoU 0.5 with each), a dog detection sits on the dog, a
    # confident detection lies on nothing, and one below 0.3 is ignored.
    gt_boxes_1 = [[0, 0, 10, 10], [10, 0, 20, 10]]
    gt_labels_1 = [0, 1]
    pred_boxes_1 = [[0, 0, 20, 10], [10, 0, 20, 10], [50, 50, 60, 60], [0, 0, 10, 10]]
    pred_scores_1 = [0.9, 0.8, 0.7, 0.29]
    pred_labels_1 = [0, 1, 1, 1]
    # Image 2: a dog nobody finds.
    gt_boxes_2 = [[30, 30, 40, 40]]
    gt_labels_2 = [1]

    matrix = confusion_matrix(
        [gt_boxes_1, gt_boxes_2],
        [gt_labels_1, gt_labels_2],
        [pred_boxes_1, np.zeros((0, 4))],
        [pred_scores_1, []],
        [pred_labels_1, []],
        num_classes=2,
    )

    expected = np.array(
        [
            #  cat  dog  background     <- predicted
            [1, 0, 0],  # cat: found by the wide cat detection
            [1, 1, 1],  # dog: the wide cat detection counts here too, the dog
            #              detection finds it; image 2's dog is missed
            [0, 1, 0],  # background: the dog detection on nothing
        ]
    )
    np.testing.assert_array_equal(matrix, expected)
    # The reference counts one detection against both boxes: rows sum to more
    # boxes than there are (dog row: 3 counts for 2 dog boxes).
    assert matrix[1].sum() == 3


def test_a_box_found_only_by_another_class_is_also_a_miss() -> None:
    matrix = confusion_matrix([[[0, 0, 10, 10]]], [[0]], [[[0, 0, 10, 10]]], [[0.9]], [[1]], num_classes=2)
    np.testing.assert_array_equal(matrix, [[0, 1, 1], [0, 0, 0], [0, 0, 0]])


def test_thresholds_are_inclusive() -> None:
    # IoU exactly 0.5 and score exactly 0.3 both count, as in the reference.
    matrix = confusion_matrix([[[0, 0, 10, 10]]], [[0]], [[[0, 0, 20, 10]]], [[0.3]], [[0]], num_classes=1)
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 0]])


def test_image_without_ground_truth_makes_false_positives() -> None:
    matrix = confusion_matrix([np.zeros((0, 4))], [[]], [[[0, 0, 5, 5], [1, 1, 4, 4]]], [[0.5, 0.6]], [[0, 0]], 1)
    np.testing.assert_array_equal(matrix, [[0, 0], [2, 0]])


def test_box_iou() -> None:
    ious = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(ious, [[1.0, 1 / 3, 0.0]], rtol=1e-6)


def test_mismatched_image_counts_are_rejected() -> None:
    with pytest.raises(ValueError):
        confusion_matrix([[]], [[]], [], [], [], num_classes=1)


def test_to_event_appends_background() -> None:
    event = to_event(np.array([[1, 2], [3, 0]]), ["cat"], score_thr=0.3, iou_thr=0.5)
    assert event.classes == ["cat", "Background"]
    assert event.matrix == [[1, 2], [3, 0]]
    assert (event.score_threshold, event.iou_threshold) == (0.3, 0.5)
    with pytest.raises(ValueError):
        to_event(np.zeros((3, 3), dtype=int), ["cat"])
