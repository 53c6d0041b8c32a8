"""Run directories: the model's config beside its checkpoints, so any later
command (resume, export, synthesize, evaluate) rebuilds exactly the trained model.

Layout of ``--out``: ``run.json`` (model config, records dir and their preprocessing, so the
run folder stands alone once its records are gone), ``checkpoints/``
(tf.train.CheckpointManager), ``logs/`` (TensorBoard), ``history.csv``, ``export/``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import tensorflow as tf
from absl import logging

from mrgan_tf.modeling.augment import AugmentConfig
from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.records.spec import SpecError
from tfrecords_tools.atomic import atomic_write_text

RUN_CONFIG = "run.json"


def config_to_dict(config: MRGANConfig) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(d: dict) -> MRGANConfig:
    d = dict(d)
    d["augment"] = AugmentConfig(**d.get("augment", {}))
    if "channels" in d:     # run.json before k was stored as k: 2k+1 slices per image
        d["context_slices"] = (int(d.pop("channels")) - 1) // 2
    return MRGANConfig(**d)


def save_run_config(run_dir: str, config: MRGANConfig, records: str, preprocess: PreprocessConfig | None = None,
                    **extra) -> None:
    """run.json: the model, the records it trains on and their preprocessing (read from them when not given)."""
    if preprocess is None:
        from mrgan_tf.records.spec import DatasetSpec

        preprocess = DatasetSpec.load(records).preprocess
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, RUN_CONFIG),
                      json.dumps({"model": config_to_dict(config), "records": os.path.abspath(records),
                                  "preprocess": preprocess.to_dict(), **extra}, indent=2))


class RunConfigError(SpecError):
    """A run.json that cannot be read; the message names the file (a SpecError, which every CLI reports)."""


def load_run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no {RUN_CONFIG}; not a training run directory")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunConfigError(f"{path}: unreadable run config ({e}); rerun train with the same --out to rewrite "
                             "it") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or not isinstance(cfg.get("records"), str):
        raise RunConfigError(f"{path}: not a run config (needs a 'model' object and a 'records' path); rerun "
                             "train with the same --out to rewrite it")
    return cfg


def run_preprocess(run_dir: str, run_cfg: dict | None = None) -> PreprocessConfig:
    """The preprocessing a run was trained with: from its run.json, or, for runs written before
    run.json held it, from its records' dataset.json (a SpecError when those are gone)."""
    run_cfg = run_cfg if run_cfg is not None else load_run_config(run_dir)
    if "preprocess" not in run_cfg:
        from mrgan_tf.records.spec import DatasetSpec

        return DatasetSpec.load(run_cfg["records"]).preprocess
    try:
        return PreprocessConfig.from_dict(run_cfg["preprocess"])
    except (TypeError, ValueError) as e:
        raise RunConfigError(f"{os.path.join(run_dir, RUN_CONFIG)}: bad preprocess ({e})") from None


def check_resume_layout(run_dir: str, preprocess: PreprocessConfig, records: str) -> None:
    """A run trained on stacks of another depth, or slices of another plane, cannot resume on the records
    ``records`` (whose preprocessing is ``preprocess``): refuse, naming both."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        return
    run_cfg = load_run_config(run_dir)
    try:
        old = run_preprocess(run_dir, run_cfg)
    except SpecError:     # an older run whose records moved: its depth from the model, its plane unknown
        old = None
    had = old.context_slices if old else config_from_dict(run_cfg["model"]).context_slices
    if had != preprocess.context_slices:
        raise RunConfigError(f"{path}: the run was trained with context_slices={had} but {records} has "
                             f"context_slices={preprocess.context_slices}; use another --out")
    if old is not None and old.slice_axis != preprocess.slice_axis:
        raise RunConfigError(f"{path}: the run was trained on {old.slice_axis} slices but {records} holds "
                             f"{preprocess.slice_axis} slices; use another --out")


# tf.train.Checkpoint writes ``ckpt-N_temp/`` (one part per device) and merges it into
# ``ckpt-N.index`` + ``ckpt-N.data-*``; a kill in between leaves the folder behind.
_CHECKPOINT_TEMP = re.compile(r".+_temp(_[0-9a-f]{32})?\Z")


def remove_checkpoint_temporaries(run_dir: str) -> list[str]:
    """Delete the half-written checkpoint folders a killed run left (call before training resumes).

    Only the one training process of a run writes its checkpoints, so any such folder
    at start-up is stale."""
    removed = []
    for folder in (os.path.join(run_dir, "checkpoints"), os.path.join(run_dir, BEST_DIR)):
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if _CHECKPOINT_TEMP.match(entry) and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def checkpoint_for(model: MRGAN) -> tf.train.Checkpoint:
    """Everything a resumed run needs: weights, optimizer slots and step counts, iteration."""
    opts = {k.replace("/", "_"): o for k, o in getattr(model, "optimizers", {}).items()}
    return tf.train.Checkpoint(model=model, **opts)


def manager_for(model: MRGAN, run_dir: str, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(checkpoint_for(model), os.path.join(run_dir, "checkpoints"),
                                      max_to_keep=max_to_keep)


def checkpoint_damage(path: str) -> str | None:
    """What is wrong with a checkpoint (missing index, truncated or altered data: every tensor is read and
    checked against its CRC), or None when it is intact."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, OSError, IndexError) as e:   # IndexError: "Read less bytes than requested"
        return (getattr(e, "message", None) or str(e)).splitlines()[0]
    return None


def restore_newest_intact(model: MRGAN, manager: tf.train.CheckpointManager) -> str | None:
    """Restore the newest intact checkpoint of ``manager`` (None: there is none); a damaged newer one
    is named in a warning saying how many iterations will be repeated."""
    damaged = []
    for path in reversed(manager.checkpoints):
        problem = checkpoint_damage(path)
        if problem is None:
            checkpoint_for(model).restore(path).assert_existing_objects_matched()
            if damaged:
                newest = _number(damaged[0][0])
                logging.warning("%s; resuming from %s instead: iterations %d..%d will be trained again",
                                "; ".join(f"{p} is damaged ({why})" for p, why in damaged), path,
                                _number(path) + 1, newest)
            return path
        damaged.append((path, problem))
    if damaged:
        raise RunConfigError(f"{manager.directory}: every checkpoint is damaged ("
                             + "; ".join(f"{p}: {why}" for p, why in damaged) + "); use another --out to start "
                             "over, or restore the folder from a backup")
    return None


def _number(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def restore_generators(run_dir: str, checkpoint: str | None = None) -> tuple[MRGAN, dict]:
    """Rebuilds the run's model and loads its weights (latest checkpoint unless one is named).

    Only the model's weights are needed, so optimizer state in the checkpoint is
    left unread (expect_partial).
    """
    cfg = load_run_config(run_dir)
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {os.path.join(run_dir, 'checkpoints')}")
    try:
        config = config_from_dict(cfg["model"])
    except (TypeError, ValueError) as e:
        raise RunConfigError(f"{os.path.join(run_dir, RUN_CONFIG)}: bad model config ({e})") from None
    model = MRGAN(config)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model, cfg


BEST_DIR = "checkpoints_best"
BEST_INFO = "best.json"
CHECKPOINT_CHOICES = ("last", "best")


class BestCheckpoint:
    """The checkpoint with the lowest validation score so far (weights only), with ``best.json``
    saying which iteration it is and its scores. Survives resumes: the record is read back."""

    def __init__(self, model: MRGAN, run_dir: str, key: str, write: bool = True):
        self.dir, self.key, self.write = os.path.join(run_dir, BEST_DIR), key, write
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), self.dir, max_to_keep=1)
        self.record = read_best(run_dir) or {}
        damage = self.record and checkpoint_damage(os.path.join(self.dir, self.record.get("checkpoint", "")))
        if damage:   # the next validation saves a new best
            logging.warning("%s: the best checkpoint %s is damaged (%s): choosing the best again from the next "
                            "validation on", self.dir, self.record.get("checkpoint"), damage)
            self.record = {}
        if self.record and self.record.get("key") != key:
            raise ValueError(f"{self.dir}: the best checkpoint was chosen by {self.record.get('key')!r}, "
                             f"this run selects by {key!r}; use another --out or the same --val_select")

    @property
    def value(self) -> float:
        return float(self.record.get("value", float("inf")))

    def offer(self, iteration: int, value: float, scores: dict) -> bool:
        """Save when ``value`` beats the best so far; returns whether it did."""
        if not value < self.value:
            return False
        if self.write:
            path = self.manager.save(checkpoint_number=iteration)
            self.record = {"key": self.key, "value": float(value), "iteration": int(iteration),
                           "checkpoint": os.path.basename(path), "scores": scores}
            atomic_write_text(os.path.join(self.dir, BEST_INFO), json.dumps(self.record, indent=2))
        return True


def read_best(run_dir: str) -> dict | None:
    """The best-checkpoint record of a run (None when the run never validated)."""
    path = os.path.join(run_dir, BEST_DIR, BEST_INFO)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable best-checkpoint record ({e})") from None


def resolve_checkpoint(run_dir: str, which: str = "last") -> str:
    """The checkpoint prefix of ``which`` (last | best) in a run directory."""
    if which not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint choice must be one of {CHECKPOINT_CHOICES}, got {which!r}")
    folder = os.path.join(run_dir, "checkpoints" if which == "last" else BEST_DIR)
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        what = "checkpoint" if which == "last" else "best checkpoint"
        hint = "" if which == "last" else " (train with --val_every and records made with --val_patients)"
        raise FileNotFoundError(f"{run_dir}: no {what} in {folder}{hint}")
    return path
