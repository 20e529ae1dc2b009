"""Owns the trainer's optimizer: Keras SGD with momentum, updated by one fused kernel per variable.

Keras' `SGD.update_step` spells the paper's update (PAPER.md)

    v <- momentum * v - lr * g;  w <- w + v

as five separate element-wise ops (two multiplies, a subtract, an assign, an assign-add),
five passes over memory for each of AlexNet's 61 M parameters. `MomentumSGD` runs the
same arithmetic as TensorFlow's `ResourceApplyKerasMomentum` kernel, one pass on CPU and
GPU, and is otherwise Keras' SGD: same variables (so checkpoints are interchangeable),
same config, same distribution behaviour. BUILD.md ("Performance notes") has its effect.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="alexnet_tf")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose dense momentum update is one fused TensorFlow kernel."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        if isinstance(variable, keras.Variable):
            variable = variable.value
        momentum = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle, lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_locking=False, use_nesterov=self.nesterov)
        return None
