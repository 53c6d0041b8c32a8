"""python -m mrgan_tf.train --flagfile=configs/mrgan.cfg

Flags -> strategy -> data -> model -> fit (checkpoints, TensorBoard) -> export.
Running the same command again resumes from the last checkpoint: step,
optimizer state, learning-rate position and the data stream continue where
they stopped.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

from mrgan_tf import distribute  # noqa: F401  (defines --strategy, --cpu_devices)
from tfrecords_tools import atomic

FLAGS = flags.FLAGS
flags.DEFINE_string("records", None, "Records directory written by make_records (holds dataset.json).")
flags.DEFINE_string("out", None, "Run directory: checkpoints/, logs/, history.csv, export/.")
flags.DEFINE_enum("mode", "mrgan", ["mrgan", "paired", "unpaired"],
                  "mrgan: paired + unpaired (Alg. 1); paired: pix2pix baseline; unpaired: CycleGAN baseline.")
flags.DEFINE_enum("paired_baseline_direction", "ct2mr", ["ct2mr", "mr2ct"],
                  "Which generator --mode=paired trains: ct2mr (the paper's baseline) or mr2ct (a synthetic-CT "
                  "pix2pix baseline).")
flags.DEFINE_integer("ngf", 64, "Generator base width (paper 64).")
flags.DEFINE_integer("n_blocks", 9, "Generator residual blocks (paper 9).")
flags.DEFINE_enum("discriminator", "D1", ["D1", "D2", "D3", "D4", "D5"], "Table II discriminator.")
flags.DEFINE_float("ndf_scale", 1.0, "Discriminator width multiplier (1 = Table II).")
flags.DEFINE_enum("adversarial", "paper", ["paper", "lsgan", "nll"],
                  "paper: LSGAN unpaired + NLL paired (Eq. 2); or every adversarial term LSGAN / NLL.")
flags.DEFINE_float("cycle_weight", 10.0, "lambda in Eq. (5).")
flags.DEFINE_float("l1_weight", 100.0, "gamma in Eq. (5).")
flags.DEFINE_integer("n_iter", 1, "Alg. 1 n_iter: unpaired steps, then paired steps, per iteration, each on "
                     "a fresh batch (the input pipeline delivers n_iter x batch examples an iteration).")
flags.DEFINE_integer("paired_repeats", 1, "Repeat each paired step, discriminator and generator updates (paper: 1).")
flags.DEFINE_integer("paired_generator_repeats", 1, "Generator updates per paired discriminator update "
                     "(authors' code: 2; paper: 1).")
flags.DEFINE_bool("paired_cycle", True, "MR-GAN's cycle terms in the paired phase (Eq. 3; the authors' code had "
                  "none). The baselines keep their mode's behaviour.")
flags.DEFINE_float("real_label", 1.0, "Real label for discriminators (authors' code: 0.9).")
flags.DEFINE_float("paired_real_label", None, "Real label for the paired discriminators; default --real_label "
                   "(authors' code: 1.0, smoothing only the unpaired ones).")
flags.DEFINE_enum("generator_target", "one", ["one", "real_label"], "Least squares generator target: 1 "
                  "(LSGAN) or the discriminator's real label (authors' code).")
flags.DEFINE_bool("first_conv_norm", True, "Instance norm after the discriminator body's first conv "
                  "(authors' code: none).")
flags.DEFINE_enum("unpaired_cycle", "own", ["own", "both"], "An unpaired generator's cycle terms: its own "
                  "cycle (Alg. 1) or both cycles (authors' code).")
flags.DEFINE_integer("pool_size", 0, "Pool of past fakes for unpaired discriminators (authors' code: 50).")
flags.DEFINE_bool("augment", True, "Flip / crop / rotate online (paper III.A).")
flags.DEFINE_enum("crop_mode", "pad", ["pad", "resize"], "Random crop from the image padded or resized to S+2*margin.")
flags.DEFINE_integer("crop_margin", 15, "Crop margin in pixels (256 -> 286: 15).")
flags.DEFINE_float("max_rotation", 5.0, "Max rotation in degrees.")
flags.DEFINE_integer("batch_size", 1, "Per-replica batch size (paper 1). Global batch = this x replicas.")
flags.DEFINE_float("lr", 2e-4, "Adam learning rate.")
flags.DEFINE_float("beta_1", 0.5, "Adam beta_1.")
flags.DEFINE_integer("decay_start", 100_000, "Iterations at constant learning rate.")
flags.DEFINE_integer("decay_steps", 200_000, "Iterations of linear decay to zero.")
flags.DEFINE_bool("separate_phase_optimizers", False, "One Adam per network and phase (authors' code: 8).")
flags.DEFINE_integer("steps", None, "Total iterations (default decay_start + decay_steps).")
flags.DEFINE_bool("unpaired_from_paired", False, "Also feed paired training slices to the unpaired streams.")
flags.DEFINE_integer("seed", 0, "Seed for data order, augmentation and initial weights.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "mixed_bfloat16 for AVX-512 BF16 CPUs / TPUs; mixed_float16 (with loss scaling) for GPUs.")
flags.DEFINE_bool("xla", False, "Compile the train step with XLA (for GPUs/TPUs; on this CPU it measured 1.2-1.5x slower).")
flags.DEFINE_bool("deterministic", False, "Deterministic TF ops (reproducible runs, slower).")
flags.DEFINE_integer("checkpoint_every", 1000, "Iterations between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("log_every", 50, "Iterations between TensorBoard scalars / history.csv rows.")
flags.DEFINE_integer("image_every", 1000, "Iterations between TensorBoard image panels.")
flags.DEFINE_integer("image_slices", 4, "Fixed validation slices in the image panel.")
flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.")
flags.DEFINE_bool("export", True, "Export SavedModels for serving when training ends.")
flags.DEFINE_integer("val_every", 0, "Iterations between validation scores on the records' validation "
                     "patients (make_records --val_patients); 0: no validation. A multiple of --log_every.")
flags.DEFINE_enum("val_select", "auto", ["auto", "ct2mr", "mr2ct"], "Whose validation MAE picks the best "
                  "checkpoint; auto: mr2ct (HU) for full-range CT records, else ct2mr.")
flags.DEFINE_enum("export_checkpoint", "last", ["last", "best"], "Checkpoint exported when training ends: "
                  "the last one, or the best by validation MAE (needs --val_every).")


def model_config_from_flags(spec):
    from mrgan_tf.augment import AugmentConfig
    from mrgan_tf.model import MRGANConfig
    aug = AugmentConfig(flip=FLAGS.augment, crop_margin=FLAGS.crop_margin if FLAGS.augment else 0,
                        crop_mode=FLAGS.crop_mode, max_rotation_deg=FLAGS.max_rotation if FLAGS.augment else 0.0)
    return MRGANConfig(mode=FLAGS.mode, image_size=spec.preprocess.image_size, ngf=FLAGS.ngf,
                       n_blocks=FLAGS.n_blocks, discriminator=FLAGS.discriminator, ndf_scale=FLAGS.ndf_scale,
                       adversarial=FLAGS.adversarial, cycle_weight=FLAGS.cycle_weight, l1_weight=FLAGS.l1_weight,
                       n_iter=FLAGS.n_iter, paired_repeats=FLAGS.paired_repeats, real_label=FLAGS.real_label,
                       paired_generator_repeats=FLAGS.paired_generator_repeats, paired_cycle=FLAGS.paired_cycle,
                       paired_real_label=FLAGS.paired_real_label, generator_target=FLAGS.generator_target,
                       first_conv_norm=FLAGS.first_conv_norm, unpaired_cycle=FLAGS.unpaired_cycle,
                       pool_size=FLAGS.pool_size, input_max=spec.input_max, augment=aug, seed=FLAGS.seed,
                       paired_baseline_direction=FLAGS.paired_baseline_direction)


class CorruptRecordsError(ValueError):
    """A training shard that cannot be read; the message names the shard and the record."""


def incomplete_exports(export_dir: str, directions) -> list[str]:
    """Serving names (ct2mr, mr2ct) among ``directions`` whose newest version is missing or not a
    loadable SavedModel (``saved_model.pb`` that parses, plus ``variables/variables.index``).

    Stale export temporaries of a killed export are removed on the way."""
    from tensorflow.core.protobuf import saved_model_pb2

    from mrgan_tf import export
    bad = []
    for d in directions:
        name = export.SERVING_NAMES[d]
        name_dir = os.path.join(export_dir, name)
        atomic.remove_stale_temporaries(name_dir)
        versions = export.existing_versions(name_dir)
        version_dir = os.path.join(name_dir, str(versions[-1])) if versions else None
        try:
            with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
                saved_model_pb2.SavedModel().ParseFromString(f.read())
            ok = os.path.isfile(os.path.join(version_dir, "variables", "variables.index"))
        except Exception:   # no version (None), an unreadable file or a garbled proto
            ok = False
        if not ok:
            bad.append(name)
    return bad


def _startup_checks(out: str) -> None:
    """What must hold before anything is written to ``--out``."""
    atomic.check_folder_path(out, "run folder (--out)")
    for name in ("checkpoints", "logs", "export"):
        atomic.check_folder_path(os.path.join(out, name), f"run's {name} folder")


def _corrupt_records_error(spec, error) -> CorruptRecordsError | None:
    """Names the shard and record behind a DataLossError from the input pipeline (None if none found)."""
    from tfrecords_tools import reader
    bad = reader.first_bad_record(spec.root, [n for n in spec.sets if spec.count(n)])
    if bad is None:
        return None
    return CorruptRecordsError(f"{bad}: unreadable training record ({type(error).__name__}); the last checkpoint "
                               f"is kept. Check the set with `python -m tfrecords_tools.inspect {spec.root}` "
                               "and rewrite the records (make_records --overwrite)")


def train(records: str, out: str, extra_callbacks=()) -> dict:
    """Trains (or resumes) a run; returns a summary. Importable for tests and the demo.

    Every start-up check (records, validation patients, the ``--out`` path) runs before
    anything is written to ``--out``."""
    import keras
    import tensorflow as tf

    from mrgan_tf import callbacks, checkpoints, data
    from mrgan_tf.model import MRGAN, make_optimizers
    from mrgan_tf.spec import DatasetSpec

    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_devices)
    chief = distribute.is_chief(strategy)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(FLAGS.seed)
    keras.mixed_precision.set_global_policy(FLAGS.precision)

    spec = DatasetSpec.load(records)
    _startup_checks(out)
    val_set = None
    if FLAGS.val_every:
        from mrgan_tf.validation import ValidationSet
        if FLAGS.val_every % FLAGS.log_every:
            raise ValueError(f"--val_every={FLAGS.val_every} must be a multiple of --log_every={FLAGS.log_every} "
                             "(validation scores go into history.csv rows)")
        val_set = ValidationSet(spec)   # before anything is written: no validation patients is an error
    elif FLAGS.export_checkpoint == "best":
        raise ValueError("--export_checkpoint=best needs --val_every (the best checkpoint is chosen on validation)")
    config = model_config_from_flags(spec)
    total = FLAGS.steps if FLAGS.steps is not None else FLAGS.decay_start + FLAGS.decay_steps
    run_dir = out if chief else os.path.join(out, "workers", f"{os.getpid()}")   # non-chief: scratch

    with strategy.scope():
        model = MRGAN(config)
        model.compile(make_optimizers(config, FLAGS.lr, FLAGS.beta_1, decay_start=FLAGS.decay_start,
                                      decay_steps=FLAGS.decay_steps,
                                      separate_phases=FLAGS.separate_phase_optimizers,
                                      loss_scale=FLAGS.precision == "mixed_float16"),
                      jit_compile=FLAGS.xla)
        manager = checkpoints.manager_for(model, run_dir, FLAGS.keep_checkpoints)
        if manager.latest_checkpoint:
            checkpoints.checkpoint_for(model).restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(model.iteration.numpy())
    replicas = strategy.num_replicas_in_sync
    # The data pipeline opens every shard set it needs: a missing one fails here, before any write.
    ds = data.training_dataset(spec, config.mode, FLAGS.batch_size * replicas, seed=FLAGS.seed,
                               skip_batches=start, unpaired_from_paired=FLAGS.unpaired_from_paired,
                               n_iter=config.n_iter)
    fixed = None
    if chief and (spec.count("paired_test") or spec.count("paired_train")):
        fixed = data.fixed_slices(spec, FLAGS.image_slices)

    # ---- from here on the run folder is written
    if chief:
        checkpoints.save_run_config(out, config, records, precision=FLAGS.precision)
        atomic.remove_stale_temporaries(out)
        for path in checkpoints.remove_checkpoint_temporaries(out):
            logging.info("removed a half-written checkpoint a killed run left: %s", path)
    if start:
        logging.info("resuming %s from iteration %d (%s)", out, start, manager.latest_checkpoint)
    if start >= total:
        logging.info("%s already trained for %d >= %d iterations", out, start, total)

    val_cbs = []
    columns = ()
    if val_set is not None:
        from mrgan_tf.validation import PREFIX, selection_key
        key = selection_key(spec, FLAGS.val_select)
        columns = [f"val_{PREFIX[d]}_{m}" for d in model.trained_directions for m in ("mae", "psnr", "ssim")]
    monitor = callbacks.TrainingMonitor(run_dir, FLAGS.log_every, FLAGS.image_every, fixed, write=chief,
                                        extra_columns=columns)
    if val_set is not None:
        best = checkpoints.BestCheckpoint(model, run_dir, key, write=chief)
        val_cbs = [callbacks.Validation(val_set, FLAGS.val_every, key, best, run_dir, monitor, write=chief)]
    ckpt_cb = callbacks.Checkpointing(manager, FLAGS.checkpoint_every, before_save=[monitor.flush])
    guard = callbacks.NaNGuard(ckpt_cb)
    t0 = time.perf_counter()
    if start < total:
        try:   # the checkpoint comes last: the history row of its iteration is written (and flushed) first
            model.fit(ds, epochs=1, steps_per_epoch=total - start,
                      callbacks=[guard, *val_cbs, monitor, ckpt_cb, *extra_callbacks],
                      verbose=FLAGS.verbose if chief else 0, shuffle=False)   # the dataset shuffles itself
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            error = _corrupt_records_error(spec, e)
            if error is None:
                raise
            raise error from None
    seconds = time.perf_counter() - t0
    if guard.error:
        raise callbacks.NonFiniteLoss(guard.error)
    summary = {"run_dir": out, "start_iteration": start, "iterations": int(model.iteration.numpy()),
               "seconds": seconds, "replicas": replicas, "global_batch": FLAGS.batch_size * replicas,
               "checkpoint": manager.latest_checkpoint}
    export_dir = os.path.join(out, "export")
    missing = incomplete_exports(export_dir, model.trained_directions) if FLAGS.export and chief else []
    if missing and start >= total:
        logging.info("%s: export missing or incomplete (%s): exporting", export_dir, ", ".join(missing))
    if FLAGS.export and chief and (start < total or missing):
        from mrgan_tf import export   # a finished run that is re-run exports no duplicate version
        # export_model numbers the pair as one version and removes an orphan half of an earlier one
        if FLAGS.export_checkpoint == "best":
            summary["export"] = export.export_run(out, export_dir, checkpoints.resolve_checkpoint(out, "best"))
        else:
            summary["export"] = export.export_model(model, spec, export_dir)
    best_record = checkpoints.read_best(out) if val_set is not None else None
    if best_record:
        summary["best"] = best_record
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.records or not FLAGS.out:
        raise app.UsageError("--records and --out are required (or a --flagfile that sets them)")
    from mrgan_tf.callbacks import NonFiniteLoss
    from mrgan_tf.spec import SpecError
    try:
        summary = train(FLAGS.records, FLAGS.out)
    except (SpecError, NonFiniteLoss, ValueError, OSError) as e:   # OSError: atomic.OutputError, FileNotFoundError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s -> {summary['run_dir']}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
