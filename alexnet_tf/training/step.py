"""The training state and the distributed train and evaluation steps.

`build_state` makes the model, the SGD optimizer with its schedule, and the counters that
a checkpoint holds; `make_train_function` and `make_eval_function` return the tf.functions
that run under any tf.distribute strategy; their outputs are `metrics.TRAIN_SUMS` and
`metrics.EVAL_SUMS` vectors. `training.loop.TrainLoop` drives them. With --ema_decay the
optimizer keeps a moving average of each trainable weight (`TrainState.averages`), and
`averaged_weights` puts them in the model for evaluation and export.
"""

import contextlib
import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import metrics, optim
from alexnet_tf.data import preprocessing
from alexnet_tf.model import HEAD_LAYER, build_alexnet, pytorch_kernel_initializer, set_trainable
from alexnet_tf.training.schedules import AlexNetSchedule, PlateauState
from alexnet_tf.weights.checkpointing import AVERAGES_PART, model_weights, random_state


def build_model(config, num_classes, input_conversion=None):
    """The AlexNet this config trains (the global dtype policy decides its compute dtype).

    `input_conversion`: the InputConversion arguments of the weights a fine-tuning run started
    from (`training.init_from`), or None.
    """
    return build_alexnet(
        num_classes=num_classes,
        variant=config.variant,
        input_shape=(config.image_size, config.image_size, 3),
        dropout_rate=config.dropout_rate,
        weight_decay=0.0,  # the optimizer applies it (build_optimizer)
        weight_init_stddev=config.weight_init_stddev,
        hidden_bias=config.hidden_bias,
        input_conversion=input_conversion,
        kernel_initializer=kernel_initializer(config),
    )


def kernel_initializer(config):
    """The kernels' initialiser for `config.weight_init` (None: the variant's own)."""
    if config.weight_init == "variant":
        return None
    if config.kernel_init == "normal":
        return keras.initializers.RandomNormal(0.0, config.weight_init_stddev)
    return pytorch_kernel_initializer()


def build_optimizer(config, schedule, loss_scaling):
    """SGD with momentum and the paper's weight decay, or decoupled decay if decoupled_weight_decay.

    `MomentumSGD` updates `v <- m v - lr (g + wd w); w <- w + v`, the paper's form (docs/paper.md):
    the L2 term `wd w` of the kernels inside the gradient, added in the same fused kernel as the
    update rather than through a regulariser in the loss (the trainer still reports the loss
    with its `wd/2 |w|^2` term). Decoupled decay instead shrinks `w` by `lr wd w` (biases excluded).
    `head_lr_multiplier` multiplies fc8's whole step, decay included (Caffe's `lr_mult`).
    `ema_decay` > 0 turns on Keras' optimizer EMA of the trainable weights (`MomentumSGD.averages`);
    0 leaves the optimizer as it was, without average variables.
    """
    decoupled = config.decoupled_weight_decay
    averaging = dict(use_ema=True, ema_momentum=config.ema_decay) if config.ema_decay > 0 else {}
    optimizer = optim.MomentumSGD(
        learning_rate=schedule,
        momentum=config.momentum,
        l2=0.0 if decoupled else config.weight_decay,
        weight_decay=config.weight_decay if decoupled else None,
        lr_multipliers={HEAD_LAYER: config.head_lr_multiplier} if config.head_lr_multiplier != 1.0 else None,
        **averaging,
    )
    if config.decoupled_weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    # optim.LossScaleOptimizer: Keras' own decides to skip a step from one replica's gradients.
    return optim.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint holds, and the checkpoint object itself."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: AlexNetSchedule
    plateau: PlateauState
    step: tf.Variable
    epoch: tf.Variable
    checkpoint: tf.train.Checkpoint
    seed: tf.Variable = None  # the run's seed, drawn at its first start unless given
    progress: dict = None  # training.progress's checkpoint entries, by name
    # --ema_decay's moving averages, keyed by the path of the trainable weight each averages
    # ("fc8/kernel"); {} without --ema_decay.
    averages: dict = dataclasses.field(default_factory=dict)

    def learning_rate(self):
        return float(self.schedule(self.optimizer.iterations))


def optimizer_averages(optimizer, variables):
    """{variable path: its moving average} of an optimizer built on `variables`; {} without EMA."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    averages = inner.averages if isinstance(inner, optim.MomentumSGD) else []
    return {variable.path: average for variable, average in zip(variables, averages)}


@contextlib.contextmanager
def averaged_weights(state):
    """Puts the moving averages in the model's weights for the `with` block, then the training weights back.

    Without averages it changes nothing. Call it in the cross-replica context (outside
    `strategy.run`): each assignment then reaches every replica's copy. Frozen layers have no
    average and keep their (unchanging) weights.
    """
    if not state.averages:
        yield
        return
    weights = {variable.path: variable for variable in state.model.weights}
    pairs = [(weights[path], average) for path, average in state.averages.items()]
    training = [tf.identity(variable.value) for variable, _ in pairs]
    for variable, average in pairs:
        variable.assign(average.value)
    try:
        yield
    finally:
        for (variable, _), value in zip(pairs, training):
            variable.assign(value)


def build_state(
    config,
    strategy,
    num_classes,
    steps_per_epoch,
    total_steps,
    loss_scaling,
    seed=0,
    input_conversion=None,
    total_follows_offset=False,
):
    """Creates model, optimizer, counters and the run's `seed` under the strategy's scope.

    `total_steps` is the schedule's end in steps of this run's batch; `total_follows_offset`:
    the end is a step count (--train_steps), not epochs (AlexNetSchedule).

    A restored checkpoint replaces all of them, the seed and the dropout layers' generator
    states included (a variable's initial value comes from worker 0 under multi-worker).
    Layers that `config.trainable` freezes are not trainable before the optimizer is built, so
    it has slots (and the checkpoint holds slots) only for the weights that train.
    """
    with strategy.scope():
        model = build_model(config, num_classes, input_conversion)
        set_trainable(model, config.trainable)
        plateau = PlateauState(config.plateau_patience, config.max_lr_drops)
        schedule = AlexNetSchedule(
            config.lr_schedule,
            config.scaled_learning_rate,
            total_steps,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            boundaries=[round(e * steps_per_epoch) for e in config.lr_decay_epochs],
            decay_factor=config.lr_decay_factor,
            plateau=plateau,
            total_follows_offset=total_follows_offset,
        )
        optimizer = build_optimizer(config, schedule, loss_scaling)
        optimizer.build(model.trainable_variables)  # slots exist before a restore fills them
        averages = optimizer_averages(optimizer, model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        run_seed = tf.Variable(seed, dtype=tf.int64, trainable=False, name="seed")
        # training.progress: the images of the epoch trained on and its length, the data
        # stream's position (epoch, images, pipelines, records), the layout (batch, pipelines,
        # replicas) and the training data's size (shards, records).
        sizes = {"epoch_images": 2, "data_position": 4, "layout": 3, "data_size": 2}
        progress = {
            name: tf.Variable([0] * size, dtype=tf.int64, trainable=False, name=name)
            for name, size in sizes.items()
        }
    checkpoint = tf.train.Checkpoint(
        model=model_weights(model),
        optimizer=optimizer,
        plateau=plateau,
        step=step,
        epoch=epoch,
        seed=run_seed,
        random=random_state(model),
        **progress,
        # By weight path, as "model" holds the weights, so that evaluate and export read them by
        # name (checkpointing.checkpoint_weights); only with --ema_decay, so that a checkpoint
        # without averaging has the parts it always had.
        **({AVERAGES_PART: averages} if averages else {}),
    )
    return TrainState(
        model, optimizer, schedule, plateau, step, epoch, checkpoint, run_seed, progress, averages
    )


def weight_decay_loss(state):
    """float: the optimizer's weight-decay term `wd/2 |kernels|^2` of the loss, for the current weights.

    The decay is applied inside the optimizer's update, so the train step's loss leaves this
    term out; the trainer adds it to the reported total loss when it writes a log line (a
    square-and-sum over all 61 M weights is too costly for every step).
    """
    optimizer = state.optimizer
    l2 = getattr(getattr(optimizer, "inner_optimizer", optimizer), "l2", 0.0)
    return float(optim.l2_loss(l2, state.model.trainable_variables)) if l2 else 0.0


def make_train_function(strategy, state, global_batch, jit_compile, loss_scaling):
    """Returns train(iterator, num_steps, stop) -> `metrics.TRAIN_SUMS` summed over steps and replicas.

    `loss` is the global batch's mean cross-entropy plus the model's regularisation losses,
    without the optimizer's weight decay (`weight_decay_loss` gives that term). Each
    replica's loss is its share of the global mean, so the optimizer's all-reduce SUM of
    gradients gives the gradient of the global batch's mean loss (plus weight decay).
    `stop` (this worker's SIGTERM flag) is summed over replicas and workers, so every
    worker learns of a preemption at the same step.
    """
    model, optimizer = state.model, state.optimizer
    num_replicas = strategy.num_replicas_in_sync

    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.reduce_sum(per_example) / global_batch
            if model.losses:
                loss += tf.add_n(model.losses) / num_replicas
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        gradients = tape.gradient(scaled, model.trainable_variables)
        return gradients, tf.stack([tf.reduce_sum(per_example), loss]), logits

    if jit_compile:  # the optimizer update stays outside XLA: it may call merge_call
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, labels, stop):
        # Batches of the TFRecord and tfds pipelines come as uint8 crops and their draws: their
        # flip, lighting and mean run here, on this replica's device (preprocessing.finish_batch).
        gradients, losses, logits = forward_backward(preprocessing.finished(images), labels)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        # Ranked by the float32 logits: the softmax's order, without its ties where it saturates.
        top1, top5, count = tf.unstack(metrics.correct_counts(tf.cast(logits, tf.float32), labels))
        return metrics.TRAIN_SUMS.pack(
            cross_entropy=losses[0], loss=losses[1], top1=top1, top5=top5, count=count, stop=stop
        )

    @tf.function
    def train(iterator, num_steps, stop):
        sums = tf.zeros([len(metrics.TRAIN_SUMS)])
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            per_replica = strategy.run(replica_step, args=(images, labels, stop))
            sums += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return sums

    return train


def make_eval_function(strategy, model, ten_crop):
    """Returns eval(distributed batch) -> `metrics.EVAL_SUMS` summed over replicas."""

    def batch_sums(images, labels):
        if ten_crop:
            probabilities = metrics.ten_crop_probabilities(lambda crops: model(crops, training=False), images)
        else:
            probabilities = tf.nn.softmax(model(images, training=False))
        return metrics.classification_sums(probabilities, labels)

    def replica_step(images, labels):
        # The last validation batch leaves some replicas an empty batch, and oneDNN's CPU
        # convolution returns a wrongly shaped output for one (TF 2.21), so skip the model.
        return tf.cond(
            tf.shape(images)[0] > 0,
            lambda: batch_sums(images, labels),
            lambda: tf.zeros([len(metrics.EVAL_SUMS)]),
        )

    @tf.function(reduce_retracing=True)
    def evaluate_batch(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return evaluate_batch


def run_evaluation(strategy, eval_fn, dataset_fn):
    """One pass over the validation data; returns metrics.summarize's dict plus images/sec."""
    start, sums = time.time(), np.zeros(len(metrics.EVAL_SUMS))
    for batch in strategy.distribute_datasets_from_function(dataset_fn):
        sums += eval_fn(batch).numpy()
    summary = metrics.summarize(sums)
    summary["images_per_sec"] = summary["count"] / max(time.time() - start, 1e-9)
    return summary
