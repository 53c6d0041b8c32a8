"""Picks the tf.distribute strategy: one device, several local devices, or several workers."""
from __future__ import annotations

import os

import tensorflow as tf
from absl import flags

flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                  "default: one device; mirrored: all local GPUs (or --cpu_devices logical CPUs); "
                  "multiworker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (0: leave it), so "
                     "MirroredStrategy can run on a machine without GPUs (tests, debugging).")


def split_cpu(n: int) -> None:
    """Must run before TensorFlow initialises its devices."""
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def make_strategy(kind: str, cpu_devices: int = 0) -> tf.distribute.Strategy:
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multiworker needs TF_CONFIG (cluster and task) in the environment")
        split_cpu(cpu_devices)
        return tf.distribute.MultiWorkerMirroredStrategy()
    split_cpu(cpu_devices)
    if kind == "mirrored":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(gpus or cpus)
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, logs and exports that others would overwrite.

    The strategy knows: true on one device and under Mirrored; under multi-worker,
    for the "chief" task, or worker 0 when the cluster names no chief.
    """
    return strategy.extended.should_checkpoint
