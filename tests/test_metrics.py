"""Tests of alexnet_tf.metrics: hits without tie inflation, ten-crop averaging, named step sums."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import metrics


def test_classification_sums_count_top1_top5_and_negative_log_likelihood():
    probabilities = tf.constant(
        [[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.01, 0.09, 0.1, 0.1, 0.2, 0.5], [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]]
    )
    labels = tf.constant([0, 0, 1])
    nll, top1, top5, count = metrics.classification_sums(probabilities, labels).numpy()
    assert nll == pytest.approx(-np.log(0.5) - np.log(0.01) - np.log(0.3))
    assert (top5, count) == (2.0, 3.0)  # label 0 in row 2 is outside the top 5
    assert top1 == 1.0  # row 3 ties classes 0 and 1 at the top: the lower index wins, label 1 misses
    summary = metrics.summarize([nll, top1, top5, count])
    assert summary["top1"] == pytest.approx(1 / 3) and summary["top5"] == pytest.approx(2 / 3)


def test_constant_scores_are_not_all_hits_the_lower_class_index_wins_ties():
    # A dead model: every class scores the same. tf.math.in_top_k counted all 4 rows as top-1 hits.
    scores = tf.zeros([4, 10])
    top1, top5, count = metrics.correct_counts(scores, tf.constant([0, 3, 5, 9])).numpy()
    assert (top1, top5, count) == (1.0, 2.0, 4.0)  # ranks 0, 3, 5, 9
    uniform = tf.nn.softmax(scores)
    assert metrics.correct_counts(uniform, tf.constant([0, 3, 5, 9])).numpy().tolist() == [1.0, 2.0, 4.0]


def test_a_saturated_softmax_gives_no_top5_hit_to_a_class_of_probability_zero():
    probabilities = tf.nn.softmax(tf.constant([[1000.0, 0, 0, 0, 0, 0, 0, 0]] * 2))
    assert probabilities.numpy()[0, 1:].max() == 0.0  # classes 1-7 tie at exactly 0
    top1, top5, _ = metrics.correct_counts(probabilities, tf.constant([7, 5])).numpy()
    assert (top1, top5) == (0.0, 0.0)
    # Class 4 is 5th of the tied block in index order: inside the top 5, as serving's top_k shows it.
    assert metrics.correct_counts(probabilities, tf.constant([4, 0])).numpy().tolist() == [1.0, 2.0, 2.0]


def test_a_row_with_nan_scores_is_never_a_hit():
    scores = tf.constant([[np.nan, np.nan, np.nan], [np.nan, 1.0, 0.0], [0.0, 1.0, 2.0]])
    assert metrics.correct_counts(scores, tf.constant([0, 1, 2])).numpy().tolist() == [1.0, 1.0, 3.0]


def test_hits_are_exactly_the_labels_among_the_top_k_indices_serving_returns():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(200, 12)).astype(np.float32)  # many ties
    labels = rng.integers(0, 12, size=200)
    top1, top5, _ = metrics.correct_counts(tf.constant(scores), tf.constant(labels)).numpy()
    for k, hits in ((1, top1), (5, top5)):
        indices = tf.math.top_k(scores, k=k).indices.numpy()
        assert hits == sum(label in row for label, row in zip(labels, indices))
    assert 0 < top1 < top5 < 200


def test_ten_crop_averages_the_softmax_not_the_logits():
    logits = tf.constant([[[10.0, 0.0], [0.0, 1.0]]])  # two crops of one image
    expected = (tf.nn.softmax(logits[0, 0]) + tf.nn.softmax(logits[0, 1])) / 2
    crops = tf.reshape(logits, [1, 2, 1, 1, 2])  # [images, crops, S, S, channels]
    averaged = metrics.ten_crop_probabilities(lambda x: tf.reshape(x, [-1, 2]), crops)
    np.testing.assert_allclose(averaged[0], expected, rtol=1e-6)


def test_step_sums_pack_and_unpack_by_name():
    vector = metrics.TRAIN_SUMS.pack(stop=1.0, count=8, top5=3, top1=2, loss=0.5, cross_entropy=4.0)
    assert vector.numpy().tolist() == [4.0, 0.5, 2.0, 3.0, 8.0, 1.0]
    assert metrics.TRAIN_SUMS.unpack(vector.numpy() * 2)["stop"] == 2.0
    with pytest.raises(ValueError, match="stop"):
        metrics.TRAIN_SUMS.pack(cross_entropy=1, loss=1, top1=1, top5=1, count=1)
