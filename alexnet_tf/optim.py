"""Owns the trainer's optimizer: SGD with momentum and the paper's weight decay, one fused pass.

The paper's update (docs/paper.md) is

    v <- momentum * v - lr * (g + wd * w);  w <- w + v

Written the usual Keras way, with `wd * w` coming from an L2 regulariser in the loss and
`keras.optimizers.SGD.update_step`, that is a square-and-sum over every kernel in the
forward pass, a multiply and an add in the backward pass, and five element-wise ops in the
update: about ten passes over memory for each of AlexNet's 61 M parameters. `MomentumSGD`
does the update in one pass: TensorFlow's `ResourceApplyKerasMomentum` kernel where there
is no decay, and an XLA-fused kernel that also adds `l2 * w` where there is. It is
otherwise Keras' SGD: same slot variables (checkpoints are interchangeable), same config,
same behaviour under tf.distribute. `l2_loss` gives the decay's term of the loss for
reporting. docs/design/performance-notes.md has the measured effect.
"""

import keras
import tensorflow as tf


def decays(variable):
    """True for the variables the paper's weight decay applies to: kernels, not biases."""
    return variable.name.split(":")[0].endswith("kernel")


@tf.function(jit_compile=True)
def _l2_momentum_update(var_handle, accum_handle, gradient, learning_rate, momentum, l2, nesterov):
    """accum <- momentum * accum - lr * (g + l2 * w); w <- w + accum (Nesterov: the Keras form)."""
    weights = tf.raw_ops.ReadVariableOp(resource=var_handle, dtype=gradient.dtype)
    accum = tf.raw_ops.ReadVariableOp(resource=accum_handle, dtype=gradient.dtype)
    step = learning_rate * (gradient + l2 * weights)
    accum = momentum * accum - step
    tf.raw_ops.AssignVariableOp(resource=accum_handle, value=accum)
    delta = momentum * accum - step if nesterov else accum
    tf.raw_ops.AssignVariableOp(resource=var_handle, value=weights + delta)


@tf.function(jit_compile=True)
def _sum_of_squares(tensors):
    return tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])


def l2_loss(l2, variables):
    """`l2 / 2 * sum(w ** 2)` over the decayed variables: the loss whose gradient is `l2 * w`."""
    decayed = [tf.convert_to_tensor(v) for v in variables if decays(v)]
    if not l2 or not decayed:
        return tf.constant(0.0)
    return 0.5 * l2 * _sum_of_squares(decayed)


def _layer_name(variable):
    """The name of the layer that owns a Keras variable: "fc8" for "fc8/kernel"."""
    parts = getattr(variable, "path", variable.name).split("/")
    return parts[-2] if len(parts) > 1 else ""


@keras.saving.register_keras_serializable(package="alexnet_tf")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with the paper's L2 weight decay, updating in one fused kernel.

    Args:
        learning_rate, momentum, nesterov, **kwargs: as `keras.optimizers.SGD`.
        l2: the paper's weight decay `wd`: `wd * w` is added to the gradient of every kernel
            (`decays`) inside the update, as an L2 loss `wd / 2 * |w|^2` would add it. 0 (the
            default) leaves the gradients alone; Keras' decoupled `weight_decay` still works.
        lr_multipliers: {layer name: factor} multiplying the learning rate of that layer's
            variables (Caffe's `lr_mult`, e.g. {"fc8": 10} for a new classifier): their step
            is `factor * lr * (g + l2 * w)`. A variable's layer is the part of its path before
            its own name ("fc8/kernel", "sequential/fc8/kernel"). None or {}: one rate for all.
    """

    def __init__(
        self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0, lr_multipliers=None, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        if l2 < 0:
            raise ValueError(f"MomentumSGD: l2 must be >= 0, got {l2!r}.")
        self.l2 = float(l2)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        if not all(v > 0 for v in self.lr_multipliers.values()):
            raise ValueError(f"MomentumSGD: lr_multipliers must be > 0, got {lr_multipliers!r}.")
        self._decayed = []
        self._lr_factors = []

    def build(self, variables):
        super().build(variables)
        # By index, decided on the model's variables: a mirrored copy is named "kernel/replica_1".
        self._decayed = [decays(v) for v in variables]
        self._lr_factors = [self.lr_multipliers.get(_layer_name(v), 1.0) for v in variables]

    @property
    def averages(self):
        """The exponential moving averages of the variables it was built with, in their order.

        Keras' own optimizer EMA (`use_ema=True, ema_momentum=d`): after every applied step,
        `average <- d * average + (1 - d) * variable`, the first step's average being the
        variable itself. [] without `use_ema` or before `build`.
        """
        if not (self.use_ema and self.built):
            return []
        return list(self._model_variables_moving_average)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if self._lr_factors[index] != 1.0:
            learning_rate = learning_rate * self._lr_factors[index]
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            if self.l2 and self._decayed[index]:
                gradient = tf.convert_to_tensor(gradient) + self.l2 * tf.convert_to_tensor(variable)
            return super().update_step(gradient, variable, learning_rate)
        if isinstance(variable, keras.Variable):
            variable = variable.value
        momentum = self.momentums[index]
        dtype = variable.dtype
        lr, gradient = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
        if self.l2 and self._decayed[index]:
            _l2_momentum_update(
                variable.handle,
                momentum.value.handle,
                gradient,
                lr,
                tf.constant(self.momentum, dtype),
                tf.constant(self.l2, dtype),
                self.nesterov,
            )
        else:
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=variable.handle,
                accum=momentum.value.handle,
                lr=lr,
                grad=gradient,
                momentum=tf.cast(self.momentum, dtype),
                use_locking=False,
                use_nesterov=self.nesterov,
            )
        return None

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """`keras.optimizers.LossScaleOptimizer` that skips a step on every replica or on none.

    Keras 3's version decides "all gradients finite" from the first local replica's own
    gradients, before they are all-reduced, and then lets the inner optimizer all-reduce
    them. Under MirroredStrategy an overflow on any other replica is then summed into every
    replica's update (the weights become inf or NaN, the loss scale stays); under
    MultiWorkerMirroredStrategy each worker decides from its own gradients, so the workers
    disagree and the ones that apply wait in the gradient all-reduce for the ones that skipped.
    Here each replica flags whether its gradients are finite, the flags are all-reduced (one
    scalar collective per step, over all replicas of all workers), and every replica takes
    the same decision from the sum: when any gradient anywhere is non-finite, all replicas
    skip the update and halve the loss scale; otherwise all apply it. That is the decision the
    all-reduced gradients would give (a sum holding an inf or NaN is not finite), without
    reducing them twice.

    Same variables, names and config as Keras' class, so checkpoints are interchangeable;
    a `.keras` file records this class (`alexnet_tf>LossScaleOptimizer`).
    """

    def check_finite(self, grads):
        """True when the gradients of every replica in sync are finite (a replica-context call).

        Called in a replica context with gradients not yet all-reduced, it all-reduces a flag;
        in a cross-replica context or without a strategy it checks `grads` alone, as Keras does.
        """
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        non_finite = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
        return tf.equal(non_finite, 0.0)

    def _tf_apply(self, grads, trainable_variables=None):
        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        grads = list(grads)
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            # Keras' own path (no strategy, or XLA on GPUs), with the all-reduced check_finite.
            self._common_apply(grads, trainable_variables=trainable_variables)
            return
        # Decided here, in the replica context, before the merge_call: every replica of every
        # worker gets the same value.
        finite = self.check_finite(grads)

        def handle_cross_replica(distribution, finite, grads, trainable_variables):
            # The all-reduced flag is the same on every replica: any local copy will do.
            finite = distribution.experimental_local_results(finite)[0]

            def apply_fn():
                distribution.extended.call_for_each_replica(
                    self._stateful_handle_finite_grads, args=(grads, trainable_variables)
                )

            # A cond in the cross-replica context, as Keras does: a replica-context cond may
            # not have a branch that calls merge_call, and the inner optimizer's apply does.
            keras.ops.cond(finite, apply_fn, self._stateful_handle_non_finite_grads)

        tf.distribute.get_replica_context().merge_call(
            handle_cross_replica, args=(finite, grads, trainable_variables)
        )
