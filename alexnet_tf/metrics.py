"""Top-1/top-5 counts without tie inflation, ten-crop averaging, and the named sums the steps return.

One definition of each, used by the train step, the trainer's evaluation, `alexnet_tf.evaluate`
and the serving signatures alike.
"""

import tensorflow as tf


class StepSums:
    """The named layout of a step's summed outputs: one float32 vector, read back by name.

    A distributed step returns one vector (one all-reduce), and readers take fields by name
    instead of by position: `TRAIN_SUMS.unpack(vector)["stop"]`.
    """

    def __init__(self, *names):
        self.names = tuple(names)

    def __len__(self):
        return len(self.names)

    def pack(self, **values):
        """float32 [len(names)] from scalars or [n]-vectors given by name (all names, in any order)."""
        if set(values) != set(self.names):
            raise ValueError(f"StepSums.pack needs exactly {self.names}, got {sorted(values)}")
        return tf.concat([tf.reshape(tf.cast(values[n], tf.float32), [-1]) for n in self.names], 0)

    def unpack(self, vector):
        """{name: float} of a summed vector (a NumPy array or tensor of len(names))."""
        return {name: float(value) for name, value in zip(self.names, vector)}


# The train step's sums over replicas and steps: the cross-entropy summed over images, the
# loss summed over steps (each step's global-batch mean), hits, images, and the stop flag.
TRAIN_SUMS = StepSums("cross_entropy", "loss", "top1", "top5", "count", "stop")
# An evaluation batch's sums: -log p(label) summed over images, hits, images.
EVAL_SUMS = StepSums("nll", "top1", "top5", "count")


def label_ranks(scores, labels):
    """int32 [B] rank of each row's label: 0 is the top class. Ties go to the lower class index.

    The rank is `#(score > score[label]) + #(score == score[label] at a lower index)`, so
    exactly one class has rank 0 and `rank < k` holds for exactly k classes of a row: the
    order `tf.math.top_k` returns (the serving signature's `top_k_classes`). A row with a
    NaN score ranks its label last (C): a diverged model gets no hits.
    """
    labels = tf.cast(labels, tf.int32)
    num_classes = tf.shape(scores)[-1]
    picked = tf.gather(scores, labels, batch_dims=1)[:, tf.newaxis]
    lower = tf.range(num_classes)[tf.newaxis, :] < labels[:, tf.newaxis]
    ahead = tf.logical_or(scores > picked, tf.logical_and(tf.equal(scores, picked), lower))
    ranks = tf.reduce_sum(tf.cast(ahead, tf.int32), axis=-1)
    has_nan = tf.reduce_any(tf.math.is_nan(scores), axis=-1)
    return tf.where(has_nan, num_classes, ranks)


def correct_counts(scores, labels):
    """float32 [top-1 hits, top-5 hits, count] of a batch of [B, C] scores (probabilities or logits).

    top-5 is top-C when C < 5. A hit for top-k is a label strictly inside the k best classes
    (`label_ranks(...) < k`): a class tied with the label counts ahead of it when its index is
    lower, so constant scores hit top-1 only for label 0 (`tf.math.in_top_k` counted every
    tied label as a hit: 100% top-1 for a dead model).
    """
    k = min(5, scores.shape[-1])
    ranks = label_ranks(scores, labels)
    hits = [tf.reduce_sum(tf.cast(ranks < n, tf.float32)) for n in (1, k)]
    return tf.stack(hits + [tf.cast(tf.shape(ranks)[0], tf.float32)])


def classification_sums(probabilities, labels):
    """EVAL_SUMS of a batch: float32 [sum of -log p(label), top-1 hits, top-5 hits, count]."""
    picked = tf.gather(probabilities, tf.cast(labels, tf.int32), batch_dims=1)
    nll = -tf.reduce_sum(tf.math.log(tf.maximum(picked, 1e-12)))
    top1, top5, count = tf.unstack(correct_counts(probabilities, labels))
    return EVAL_SUMS.pack(nll=nll, top1=top1, top5=top5, count=count)


def ten_crop_probabilities(logits_fn, crops):
    """The paper's ten-crop test: [B, crops, S, S, 3] -> [B, C] float32 softmax averaged over the crops.

    Args:
      logits_fn: float32 [N, S, S, 3] -> logits [N, C] (a model, a SavedModel's `logits`).
      crops: float32 [B, crops, S, S, 3] (`preprocessing.ten_crop` of each image).
    """
    num_crops = crops.shape[1]
    logits = logits_fn(tf.reshape(crops, [-1] + crops.shape[2:].as_list()))
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1, num_crops, logits.shape[-1]])
    return tf.reduce_mean(tf.nn.softmax(logits, axis=-1), axis=1)


def summarize(sums):
    """Summed EVAL_SUMS -> {"loss", "top1", "top5", "count"} (accuracies in [0, 1])."""
    values = EVAL_SUMS.unpack(sums)
    count_or_one = max(values["count"], 1.0)
    return {
        "loss": values["nll"] / count_or_one,
        "top1": values["top1"] / count_or_one,
        "top5": values["top5"] / count_or_one,
        "count": values["count"],
    }
