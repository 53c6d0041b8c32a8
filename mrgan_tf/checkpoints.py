"""Run directories: the model's config beside its checkpoints, so any later
command (resume, export, synthesize, evaluate) rebuilds exactly the trained model.

Layout of ``--out``: ``run.json`` (model config + records dir), ``checkpoints/``
(tf.train.CheckpointManager), ``logs/`` (TensorBoard), ``history.csv``, ``export/``.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from mrgan_tf.augment import AugmentConfig
from mrgan_tf.model import MRGAN, MRGANConfig
from tfrecords_tools.atomic import atomic_write_text

RUN_CONFIG = "run.json"


def config_to_dict(config: MRGANConfig) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> MRGANConfig:
    d = dict(d)
    d["augment"] = AugmentConfig(**d.get("augment", {}))
    return MRGANConfig(**d)


def save_run_config(run_dir: str, config: MRGANConfig, records: str, **extra) -> None:
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, RUN_CONFIG),
                      json.dumps({"model": config_to_dict(config), "records": os.path.abspath(records), **extra},
                                 indent=2))


def load_run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no {RUN_CONFIG}; not a training run directory")
    with open(path) as f:
        return json.load(f)


def checkpoint_for(model: MRGAN) -> tf.train.Checkpoint:
    """Everything a resumed run needs: weights, optimizer slots and step counts, iteration."""
    opts = {k.replace("/", "_"): o for k, o in getattr(model, "optimizers", {}).items()}
    return tf.train.Checkpoint(model=model, **opts)


def manager_for(model: MRGAN, run_dir: str, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(checkpoint_for(model), os.path.join(run_dir, "checkpoints"),
                                      max_to_keep=max_to_keep)


def restore_generators(run_dir: str, checkpoint: str | None = None) -> tuple[MRGAN, dict]:
    """Rebuilds the run's model and loads its weights (latest checkpoint unless one is named).

    Only the model's weights are needed, so optimizer state in the checkpoint is
    left unread (expect_partial).
    """
    cfg = load_run_config(run_dir)
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {os.path.join(run_dir, 'checkpoints')}")
    model = MRGAN(config_from_dict(cfg["model"]))
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model, cfg
