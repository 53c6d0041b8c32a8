"""Run as a script: FusedAdam under MirroredStrategy over 2 logical CPUs vs Keras Adam on one device.

A separate process because the CPU must be split before TensorFlow starts. Each
replica gets half of a fixed gradient (so the replicas' sum is the one-device
gradient); five applies with a decaying schedule. Prints JSON {"max_diff": ...}.
"""
import json

from mrgan_tf.training.distribute import split_cpu

split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrgan_tf.modeling.fast.fused_adam import FusedAdam  # noqa: E402
from mrgan_tf.modeling.schedule import ConstantThenLinearDecay  # noqa: E402

SHAPES = [(3, 3, 2, 4), (4,), (5,)]


def grads(step):
    rng = np.random.default_rng(step)
    return [tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES]


def train(opt_cls, strategy):
    init = np.random.default_rng(99)
    with strategy.scope():
        vs = [keras.Variable(init.normal(size=s).astype("float32")) for s in SHAPES]
        opt = opt_cls(ConstantThenLinearDecay(1e-2, 2, 4), beta_1=0.5)
        opt.build(vs)

    @tf.function
    def step(gs):
        def replica_fn(gs):
            share = 1.0 / strategy.num_replicas_in_sync
            opt.apply_gradients(zip([g * share for g in gs], vs))
        strategy.run(replica_fn, args=(gs,))

    for i in range(5):
        step(grads(i))
    return [v.numpy() for v in vs] + [v.numpy() for v in opt.variables]


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    fused = train(FusedAdam, mirrored)
    plain = train(keras.optimizers.Adam, tf.distribute.get_strategy())
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "tensors": len(fused),
                      "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(fused, plain))}))


if __name__ == "__main__":
    main()
