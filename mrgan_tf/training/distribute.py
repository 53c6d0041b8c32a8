"""Picks the tf.distribute strategy: one device, several local devices, or several workers."""
from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from absl import flags

from mrgan_tf import cli
from mrgan_tf.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker")


class DistributeError(UserError, ValueError):
    """A strategy that cannot run here (unknown, or multi-worker without a cluster)."""


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    strategy: str = "default"    # one of STRATEGIES
    cpu_devices: int = 0         # logical CPUs to split the CPU into (0: leave it)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise DistributeError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")


DISTRIBUTE_FLAGS = {
    "strategy": cli.Flag("default: one device; mirrored: all local GPUs (or --cpu_devices logical CPUs); "
                         "multiworker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.", STRATEGIES),
    "cpu_devices": cli.Flag("Split the CPU into this many logical devices (0: leave it), so "
                            "MirroredStrategy can run on a machine without GPUs (tests, debugging)."),
}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """--strategy and --cpu_devices, for the tools that train (called by their ``define_flags``)."""
    cli.define_field_flags(fv, DistributeConfig, DISTRIBUTE_FLAGS)


def config_from_flags(fv: flags.FlagValues = flags.FLAGS) -> DistributeConfig:
    return DistributeConfig(**cli.field_values(fv, DISTRIBUTE_FLAGS))


def split_cpu(n: int) -> None:
    """Must run before TensorFlow initialises its devices."""
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def make_strategy(kind: str, cpu_devices: int = 0) -> tf.distribute.Strategy:
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise DistributeError("--strategy=multiworker needs TF_CONFIG (cluster and task) in the environment")
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
