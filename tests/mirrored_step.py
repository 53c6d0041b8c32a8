"""Run as a script: one Algorithm-1 iteration on one device vs MirroredStrategy over 2 logical CPUs.

Arguments: records folder, seed (0), n_iter (1; with 2, each replica splits its share of
the iteration's 2 x global batch into two inner steps), learning rate (LR). "losses" holds each logged loss
(the last update of its kind) from both runs.

A separate process because the CPU must be split before TensorFlow starts.
Plain SGD: Adam's first step is lr * g / (|g| + eps), which turns float
round-off in near-zero gradients into full-size steps and would hide whether
the replicas' gradients really add up to the single device's. The eight updates
are chained (each sees the weights the previous one changed), so float round-off
from the different batch split is amplified by the step size: at lr 1e-3 some
seeds drift to 1e-3, at 1e-4 every seed tried agreed to 1e-7 while the weights
moved by ~5e-3. Seeded and deterministic, so the result does not vary by run.
Prints JSON {"max_diff": ..., "max_change": ..., "losses": {name: [single, mirrored]}}.
"""
import json
import os
import sys

from mrgan_tf.training.distribute import split_cpu

SIZE = 32
LR = 1e-4

split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrgan_tf.modeling.augment import AugmentConfig  # noqa: E402
from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig  # noqa: E402
from mrgan_tf.training import data  # noqa: E402


def main(records_dir, seed=0, n_iter=1, lr=LR):
    sys.path.insert(0, os.path.dirname(__file__))
    from records_factory import write_tiny_records
    spec = write_tiny_records(records_dir, size=SIZE, per_set=8)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    cfg = MRGANConfig(mode="mrgan", image_size=SIZE, ngf=4, n_blocks=1, ndf_scale=0.125, n_iter=n_iter,
                      augment=AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0))
    batch = next(iter(data.training_dataset(spec, "mrgan", 2, seed=0, n_iter=n_iter)))
    ds = tf.data.Dataset.from_tensors(batch)
    single = MRGAN(cfg)
    sgd = lambda: {n: keras.optimizers.SGD(lr) for n in ("syn_mr", "syn_ct", "dis_mr", "dis_ct")}  # noqa: E731
    single.compile(sgd())
    start = [w.copy() for w in single.get_weights()]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = MRGAN(cfg)
        mirrored.compile(sgd())
    mirrored.set_weights(start)
    single_logs = single.fit(ds, epochs=1, verbose=0).history
    mirrored_logs = mirrored.fit(ds, epochs=1, verbose=0).history
    trainable = {id(v) for v in single.trainable_variables}
    idx = [i for i, v in enumerate(single.weights) if id(v) in trainable]
    a, b = single.get_weights(), mirrored.get_weights()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weights": len(idx),
        "max_diff": max(float(np.max(np.abs(a[i] - b[i]))) for i in idx),
        "max_change": max(float(np.max(np.abs(a[i] - start[i]))) for i in idx),
        "iterations": [int(single.iteration.numpy()), int(mirrored.iteration.numpy())],
        "losses": {k: [single_logs[k][-1], mirrored_logs[k][-1]] for k in sorted(single_logs)},
    }))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:4]), *(float(a) for a in sys.argv[4:5]))
