"""Sec. II.D's learning rate: constant, then linear decay to zero."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mrgan_tf")
class ConstantThenLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr for ``decay_start`` iterations, then linearly to 0 over ``decay_steps``.

    Optimizers count their own updates; an Algorithm-1 iteration may apply one
    optimizer several times (unpaired and paired phase), so ``updates_per_iteration``
    converts the optimizer's count back to iterations.
    """

    def __init__(self, initial_lr: float = 2e-4, decay_start: int = 100_000, decay_steps: int = 200_000,
                 updates_per_iteration: int = 1):
        self.initial_lr = float(initial_lr)
        self.decay_start = int(decay_start)
        self.decay_steps = int(decay_steps)
        self.updates_per_iteration = max(1, int(updates_per_iteration))

    def __call__(self, step):
        it = tf.cast(step // self.updates_per_iteration, tf.float32)
        frac = (it - self.decay_start) / max(self.decay_steps, 1)
        return self.initial_lr * tf.clip_by_value(1.0 - frac, 0.0, 1.0)

    def get_config(self):
        return dict(initial_lr=self.initial_lr, decay_start=self.decay_start, decay_steps=self.decay_steps,
                    updates_per_iteration=self.updates_per_iteration)
