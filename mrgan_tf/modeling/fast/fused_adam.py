"""Keras Adam whose update of one weight is one TensorFlow kernel (``ResourceApplyAdam``).

Keras 3's Adam builds ~20 graph ops per weight and update (casts, powers,
the bias correction, three reads and three assigns); Algorithm 1 applies an
optimizer 16 times per iteration over 28 M weights in ~500 tensors, so most of
the traced step's ops and much of its tracing time are optimizer bookkeeping.
Here the scalars are computed once per apply and each weight gets the fused
kernel, which does Keras' arithmetic (m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2),
w -= a m / (sqrt(v) + eps), a = lr sqrt(1 - b2^t) / (1 - b1^t)) in one pass.
Same slots, names and checkpoints as ``keras.optimizers.Adam``.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mrgan_tf")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (not amsgrad) with one ``ResourceApplyAdam`` per weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("FusedAdam has no amsgrad; use keras.optimizers.Adam")

    def _scalars(self, iterations, learning_rate, dtypes) -> dict:
        """Per dtype: the kernel's lr, beta_1^t, beta_2^t, beta_1, beta_2 and epsilon for update t = iterations + 1."""
        step = tf.cast(iterations + 1, tf.float32)
        scalars = {}
        for dtype in dtypes:
            cast = lambda x: tf.cast(x, dtype)  # noqa: E731
            scalars[dtype.name] = (cast(learning_rate), cast(tf.pow(self.beta_1, step)),
                                   cast(tf.pow(self.beta_2, step)), cast(self.beta_1), cast(self.beta_2),
                                   cast(self.epsilon))
        return scalars

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        # The scalars are computed here, per replica, and reach each device's kernel through
        # ``extended.update``'s args (as Keras passes the learning rate).
        scalars = self._scalars(self.iterations, learning_rate, {v.dtype for v in variables})
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._fused_update, self._distribution_strategy, grads_and_vars, scalars)

    def slots(self, variable) -> tuple:
        """The first and second moment (tf.Variables) this optimizer keeps for ``variable``."""
        index = self._get_variable_index(variable)
        return self._momentums[index].value, self._velocities[index].value

    def apply_elsewhere(self, grads, variables, momentums, velocities, iterations) -> None:
        """This optimizer's update of other weights, whose slots and step counter are passed in.

        What ``apply_gradients`` does for its own weights, one device, no loss scale: the
        learning rate of its schedule at ``iterations``, one kernel per weight, then
        ``iterations`` += 1. It lets one traced update serve two networks of the same shapes
        (``shared_update.py``, which uses it only for optimizers with a schedule).
        """
        scalars = self._scalars(iterations, self._learning_rate(iterations), {v.dtype for v in variables})
        for grad, var, m, v in zip(grads, variables, momentums, velocities):
            _apply_adam(var, grad, m, v, scalars[var.dtype.name])
        iterations.assign_add(1)

    def _fused_update(self, distribution, grads_and_vars, scalars):
        for grad, var in grads_and_vars:
            index = self._get_variable_index(var)
            m, v = self._momentums[index].value, self._velocities[index].value
            distribution.extended.update(var, _apply_adam, args=(grad, m, v, scalars[var.dtype.name]), group=False)


def _apply_adam(var, grad, m, v, scalars):
    lr, beta_1_power, beta_2_power, beta_1, beta_2, epsilon = scalars
    return tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                                        beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2,
                                        epsilon=epsilon, grad=tf.cast(grad, var.dtype))
