"""Run as a script: one Algorithm-1 iteration on one device vs MirroredStrategy over 2 logical CPUs.

A separate process because the CPU must be split before TensorFlow starts.
Plain SGD: Adam's first step is lr * g / (|g| + eps), which turns float
round-off in near-zero gradients into full-size steps and would hide whether
the replicas' gradients really add up to the single device's. A moderate step
keeps the eight chained updates in the regime where round-off stays round-off.
Prints JSON {"max_diff": ..., "max_change": ...}.
"""
import json
import sys

from mrgan_tf.distribute import split_cpu

split_cpu(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrgan_tf import data  # noqa: E402
from mrgan_tf.augment import AugmentConfig  # noqa: E402
import keras  # noqa: E402

from mrgan_tf.model import MRGAN, MRGANConfig  # noqa: E402
from mrgan_tf.spec import DatasetSpec  # noqa: E402


def main(records):
    spec = DatasetSpec.load(records)
    cfg = MRGANConfig(mode="mrgan", image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125,
                      augment=AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0))
    batch = next(iter(data.training_dataset(spec, "mrgan", 2, seed=0)))
    ds = tf.data.Dataset.from_tensors(batch)
    single = MRGAN(cfg)
    sgd = lambda: {n: keras.optimizers.SGD(1e-3) for n in ("syn_mr", "syn_ct", "dis_mr", "dis_ct")}  # noqa: E731
    single.compile(sgd())
    start = [w.copy() for w in single.get_weights()]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = MRGAN(cfg)
        mirrored.compile(sgd())
    mirrored.set_weights(start)
    single.fit(ds, epochs=1, verbose=0)
    mirrored.fit(ds, epochs=1, verbose=0)
    trainable = {id(v) for v in single.trainable_variables}
    idx = [i for i, v in enumerate(single.weights) if id(v) in trainable]
    a, b = single.get_weights(), mirrored.get_weights()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weights": len(idx),
        "max_diff": max(float(np.max(np.abs(a[i] - b[i]))) for i in idx),
        "max_change": max(float(np.max(np.abs(a[i] - start[i]))) for i in idx),
        "iterations": [int(single.iteration.numpy()), int(mirrored.iteration.numpy())],
    }))


if __name__ == "__main__":
    main(sys.argv[1])
