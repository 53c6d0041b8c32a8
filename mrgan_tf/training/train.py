"""python -m mrgan_tf.train --flagfile=configs/mrgan.cfg

Flags -> ``MRGANConfig`` (the model) + ``TrainConfig`` (how to train it) ->
``train()``: strategy -> data -> model -> fit (checkpoints, TensorBoard) -> export.
Every option is a dataclass field; its flag takes the field's type and default
and, for a choice, the table the field names a row of (``model.MODES``, the
Table II discriminators, ...). Running the same command again resumes from the
last checkpoint: step, optimizer state, learning-rate position and the data
stream continue where they stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time

from absl import app, flags, logging

from mrgan_tf import cli, requirements
from mrgan_tf.errors import UserError
from mrgan_tf.modeling import losses, networks
from mrgan_tf.modeling.augment import CROP_MODES, AugmentConfig
from mrgan_tf.modeling.modes import MODES, PAIRED_BASELINE
from mrgan_tf.modeling.mrgan import GENERATOR_TARGETS, UNPAIRED_CYCLES, MRGANConfig
from mrgan_tf.training import distribute
from mrgan_tf.training.checkpoints import CHECKPOINT_CHOICES
from mrgan_tf.training.validation import SELECT
from tfrecords_tools import atomic
from tfrecords_tools.folder_lock import folder_lock

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class TrainConfigError(UserError, ValueError):
    """Training options that contradict each other, or a model config that does not fit the records."""


class CorruptRecordsError(UserError, ValueError):
    """A training shard that cannot be read; the message names the shard and the record."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the model itself is ``MRGANConfig``): schedule, batch, devices, cadences, export."""
    batch_size: int = 1                       # per replica
    lr: float = 2e-4
    beta_1: float = 0.5
    decay_start: int = 100_000
    decay_steps: int = 200_000
    separate_phase_optimizers: bool = False
    steps: int | None = None                  # None: decay_start + decay_steps
    unpaired_from_paired: bool | None = None   # None: where the records have no unpaired set
    precision: str = "float32"                # one of PRECISIONS
    xla: bool = False
    deterministic: bool = False
    distribute: distribute.DistributeConfig = distribute.DistributeConfig()
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    image_every: int = 1000
    image_slices: int = 4
    verbose: int = 1                          # 0: result lines only; 1: + progress lines; 2: + libraries' INFO
    progress_every: int = 0                   # 0: about 20 progress lines a run
    progress_seconds: float = 30.0            # a progress line at least this often (0: no limit)
    export: bool = True
    val_every: int = 0                        # 0: no validation
    val_select: str = "auto"                  # one of validation.SELECT
    export_checkpoint: str = "last"           # one of checkpoints.CHECKPOINT_CHOICES

    def __post_init__(self):
        for name, choices in (("precision", PRECISIONS), ("val_select", SELECT),
                              ("export_checkpoint", CHECKPOINT_CHOICES)):
            if getattr(self, name) not in choices:
                raise TrainConfigError(f"--{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.val_every and self.val_every % self.log_every:
            raise TrainConfigError(f"--val_every={self.val_every} must be a multiple of --log_every="
                                   f"{self.log_every} (validation scores go into history.csv rows)")
        if not self.val_every and self.export_checkpoint == "best":
            raise TrainConfigError("--export_checkpoint=best needs --val_every (the best checkpoint is chosen "
                                   "on validation)")

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.decay_start + self.decay_steps


# ---------------------------------------------------------------- flags: one line per option
# Field -> flag; the flag's type and default are the field's. A new model option is its
# MRGANConfig field plus one line here.
MODEL_FLAGS = {
    "mode": cli.Flag("mrgan: paired + unpaired (Alg. 1); paired: pix2pix baseline; unpaired: CycleGAN baseline.",
                     MODES),
    "paired_baseline_direction": cli.Flag("Which generator --mode=paired trains: ct2mr (the paper's baseline) or "
                                          "mr2ct (a synthetic-CT pix2pix baseline).", PAIRED_BASELINE),
    "ngf": cli.Flag("Generator base width (paper 64)."),
    "n_blocks": cli.Flag("Generator residual blocks (paper 9)."),
    "upsample": cli.Flag("Generator upsampling: the paper's transposed conv, or a nearest / bilinear resize then a "
                         "conv (no checkerboard).", networks.UPSAMPLING),
    "discriminator": cli.Flag("Table II discriminator.", networks.DISCRIMINATOR_VARIANTS),
    "ndf_scale": cli.Flag("Discriminator width multiplier (1 = Table II)."),
    "adversarial": cli.Flag("paper: LSGAN unpaired + NLL paired (Eq. 2); or every adversarial term LSGAN / NLL.",
                            losses.ADVERSARIAL_CHOICES),
    "cycle_weight": cli.Flag("lambda in Eq. (5)."),
    "l1_weight": cli.Flag("gamma in Eq. (5)."),
    "n_iter": cli.Flag("Alg. 1 n_iter: unpaired steps, then paired steps, per iteration, each on a fresh batch "
                       "(the input pipeline delivers n_iter x batch examples an iteration)."),
    "paired_repeats": cli.Flag("Repeat each paired step, discriminator and generator updates (paper: 1)."),
    "paired_generator_repeats": cli.Flag("Generator updates per paired discriminator update (authors' code: 2; "
                                         "paper: 1)."),
    "paired_cycle": cli.Flag("MR-GAN's cycle terms in the paired phase (Eq. 3; the authors' code had none). The "
                             "baselines keep their mode's behaviour."),
    "real_label": cli.Flag("Real label for discriminators (authors' code: 0.9)."),
    "paired_real_label": cli.Flag("Real label for the paired discriminators; default --real_label (authors' "
                                  "code: 1.0, smoothing only the unpaired ones)."),
    "generator_target": cli.Flag("Least squares generator target: 1 (LSGAN) or the discriminator's real label "
                                 "(authors' code).", GENERATOR_TARGETS),
    "first_conv_norm": cli.Flag("Instance norm after the discriminator body's first conv (authors' code: none)."),
    "unpaired_cycle": cli.Flag("An unpaired generator's cycle terms: its own cycle (Alg. 1) or both cycles "
                               "(authors' code).", UNPAIRED_CYCLES),
    "pool_size": cli.Flag("Pool of past fakes for unpaired discriminators (authors' code: 50)."),
    "seed": cli.Flag("Seed for data order, augmentation and initial weights."),
}
# --noaugment also zeroes the crop margin and the rotation (model_config_from_flags).
AUGMENT_FLAGS = {
    "flip": cli.Flag("Flip / crop / rotate online (paper III.A).", name="augment"),
    "crop_mode": cli.Flag("Random crop from the image padded or resized to S+2*margin.", CROP_MODES),
    "crop_margin": cli.Flag("Crop margin in pixels (256 -> 286: 15)."),
    "max_rotation_deg": cli.Flag("Max rotation in degrees.", name="max_rotation"),
}
TRAIN_FLAGS = {
    "batch_size": cli.Flag("Per-replica batch size (paper 1). Global batch = this x replicas."),
    "lr": cli.Flag("Adam learning rate."),
    "beta_1": cli.Flag("Adam beta_1."),
    "decay_start": cli.Flag("Iterations at constant learning rate."),
    "decay_steps": cli.Flag("Iterations of linear decay to zero."),
    "separate_phase_optimizers": cli.Flag("One Adam per network and phase (authors' code: 8). Off by default: "
                                          "at CPU scale it was worse in every seed (docs/RESULTS.md)."),
    "steps": cli.Flag("Total iterations (default decay_start + decay_steps)."),
    "unpaired_from_paired": cli.Flag("Feed the paired training slices to the unpaired streams too. Default: for a "
                                     "modality the records have no unpaired slices of (an all-paired dataset such "
                                     "as SynthRAD); --nounpaired_from_paired: never."),
    "precision": cli.Flag("mixed_bfloat16 for AVX-512 BF16 CPUs / TPUs; mixed_float16 (with loss scaling) for "
                          "GPUs.", PRECISIONS),
    "xla": cli.Flag("Compile the train step with XLA (for GPUs/TPUs; on this CPU it measured 1.2-1.5x slower)."),
    "deterministic": cli.Flag("Deterministic TF ops (reproducible runs, slower)."),
    "checkpoint_every": cli.Flag("Iterations between checkpoints."),
    "keep_checkpoints": cli.Flag("Checkpoints kept."),
    "log_every": cli.Flag("Iterations between TensorBoard scalars / history.csv rows."),
    "image_every": cli.Flag("Iterations between TensorBoard image panels."),
    "image_slices": cli.Flag("Fixed validation slices in the image panel."),
    "verbose": cli.Flag("0: only what was written at the end; 1: also a progress line every --progress_every "
                        "iterations; 2: also the INFO log lines of TensorFlow and other libraries."),
    "progress_every": cli.Flag("Iterations between progress lines (0: about 20 lines a run)."),
    "progress_seconds": cli.Flag("A progress line at least this often, in seconds (0: only every --progress_every)."),
    "export": cli.Flag("Export SavedModels for serving when training ends."),
    "val_every": cli.Flag("Iterations between validation scores on the records' validation patients "
                          "(make_records --val_patients); 0: no validation. A multiple of --log_every."),
    "val_select": cli.Flag("Whose validation MAE picks the best checkpoint; auto: mr2ct (HU) for full-range CT "
                           "records, else ct2mr.", SELECT),
    "export_checkpoint": cli.Flag("Checkpoint exported when training ends: the last one, or the best by "
                                  "validation MAE (needs --val_every).", CHECKPOINT_CHOICES),
}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_string("records", None, "Records directory written by make_records (holds dataset.json).",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "Run directory: checkpoints/, logs/, history.csv, export/.", flag_values=fv)
    cli.define_field_flags(fv, MRGANConfig, MODEL_FLAGS)
    cli.define_field_flags(fv, AugmentConfig, AUGMENT_FLAGS)
    cli.define_field_flags(fv, TrainConfig, TRAIN_FLAGS)
    distribute.define_flags(fv)


def model_config_from_flags(fv: flags.FlagValues, spec) -> MRGANConfig:
    """The model the flags describe, at the image size and intensity scale of the records ``spec``."""
    aug = cli.field_values(fv, AUGMENT_FLAGS)
    if not aug["flip"]:   # --noaugment: no flip, crop or rotation
        aug.update(crop_margin=0, max_rotation_deg=0.0)
    return MRGANConfig(**cli.field_values(fv, MODEL_FLAGS), image_size=spec.preprocess.image_size,
                       input_max=spec.input_max, augment=AugmentConfig(**aug),
                       context_slices=spec.preprocess.context_slices)


def train_config_from_flags(fv: flags.FlagValues) -> TrainConfig:
    return TrainConfig(**cli.field_values(fv, TRAIN_FLAGS), distribute=distribute.config_from_flags(fv))


def configs_from_flags(fv: flags.FlagValues) -> tuple[MRGANConfig, TrainConfig]:
    """Both configs of a command line (the records named by --records give the image size and scale)."""
    from mrgan_tf.records.spec import DatasetSpec
    train_config = train_config_from_flags(fv)     # option errors first, before the records are read
    return model_config_from_flags(fv, DatasetSpec.load(fv.records)), train_config


# ---------------------------------------------------------------- training
def incomplete_exports(export_dir: str, directions) -> list[str]:
    """Serving names (ct2mr, mr2ct) among ``directions`` whose newest version is missing or not a
    loadable SavedModel (``saved_model.pb`` that parses, plus ``variables/variables.index``).

    Stale export temporaries of a killed export are removed on the way."""
    from tensorflow.core.protobuf import saved_model_pb2

    from mrgan_tf.serving import export
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


def _startup_checks(out: str, spec, model_config: MRGANConfig) -> None:
    """What must hold before anything is written to ``out``."""
    wanted = (spec.preprocess.image_size, spec.input_max)
    if (model_config.image_size, model_config.input_max) != wanted:
        raise TrainConfigError(f"{spec.root}: records of {wanted[0]}-pixel slices with intensity 1.0 = "
                               f"{wanted[1]:g}, but the model config has image_size={model_config.image_size}, "
                               f"input_max={model_config.input_max:g} (model_config_from_flags takes the records')")
    from mrgan_tf.training import checkpoints, data
    data.check_depth(spec, model_config.context_slices)               # 2.5D: the records' stack depth
    checkpoints.check_resume_layout(out, spec.preprocess, spec.root)  # a run resumes on its own depth and plane
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


def _compiled_model(model_config: MRGANConfig, tc: TrainConfig, run_dir: str, resume_from: str):
    """The model with its optimizers (call in the strategy's scope), restored from ``resume_from``'s newest
    intact checkpoint; it saves into ``run_dir``'s."""
    from mrgan_tf.modeling.fast import shared_update
    from mrgan_tf.modeling.mrgan import MRGAN, make_optimizers
    from mrgan_tf.training import checkpoints
    model = MRGAN(model_config)
    model.compile(make_optimizers(model_config, tc.lr, tc.beta_1, decay_start=tc.decay_start,
                                  decay_steps=tc.decay_steps, separate_phases=tc.separate_phase_optimizers,
                                  loss_scale=tc.precision == "mixed_float16"),
                  jit_compile=tc.xla)
    shared_update.attach(model)          # one traced update per phase for both directions, where exact
    manager = checkpoints.manager_for(model, run_dir, tc.keep_checkpoints)
    source = manager if resume_from == run_dir else checkpoints.manager_for(model, resume_from, tc.keep_checkpoints)
    checkpoints.restore_newest_intact(model, source)   # a damaged latest one is named and passed over
    return model, manager


def _export_at_end(model, spec, out: str, tc: TrainConfig, trained: bool) -> tuple[dict, str] | None:
    """SavedModels of the finished run and the checkpoint they hold (None: none due); a finished run
    that is re-run exports no duplicate."""
    from mrgan_tf.serving import export
    from mrgan_tf.training import checkpoints
    export_dir = os.path.join(out, "export")
    missing = incomplete_exports(export_dir, model.trained_directions)
    if missing and not trained:
        logging.info("%s: export missing or incomplete (%s): exporting", export_dir, ", ".join(missing))
    if not (trained or missing):
        return None
    # export_model numbers the pair as one version and removes an orphan half of an earlier one
    if tc.export_checkpoint == "best":
        best = checkpoints.resolve_checkpoint(out, "best")
        return export.export_run(out, export_dir, best), best
    return export.export_model(model, spec, export_dir), checkpoints.resolve_checkpoint(out, "last")


def train(records: str, out: str, model_config: MRGANConfig, train_config: TrainConfig, callbacks=()) -> dict:
    """Trains (or resumes) the run in ``out``; returns a summary. The CLI, tests and the demo call it.

    Every start-up check (records, validation patients, the ``out`` path) runs before
    anything is written to ``out``.

    Args:
        records: records directory written by make_records (holds dataset.json).
        out: run directory: run.json, checkpoints/, logs/, history.csv, export/.
        model_config: the model; its image_size and input_max must be the records'
            (``model_config_from_flags`` takes them from the records).
        train_config: how to train it: schedule, batch, devices, cadences, validation, export.
        callbacks: extra Keras callbacks, run after the run's own.

    Returns:
        run_dir, start_iteration, iterations, seconds, replicas, global_batch, checkpoint;
        export (name -> SavedModel folder) and export_checkpoint when it exported; best when it validated.
    """
    with contextlib.ExitStack() as held:   # the run folder's lock, taken by the chief; the signal handlers
        return _train(records, out, model_config, train_config, callbacks, held)


def _train(records: str, out: str, model_config: MRGANConfig, train_config: TrainConfig, callbacks,
           held: contextlib.ExitStack) -> dict:
    import keras
    import tensorflow as tf

    from mrgan_tf.records.spec import DatasetSpec
    from mrgan_tf.training import checkpoints, data
    from mrgan_tf.training.callbacks import (Checkpointing, NaNGuard, NonFiniteLoss, ProgressLines, TrainingMonitor,
                                             Validation)
    from mrgan_tf.training.preemption import StopOnSignal, WorkersStopTogether

    tc = train_config
    requirements.require("train", export=tc.export)   # a package --export needs at the end: named now
    # SIGTERM/SIGINT: stop after the running iteration, saved. Across workers: WorkersStopTogether, below.
    multiworker = tc.distribute.strategy == "multiworker"
    stopper = StopOnSignal().arm() if not multiworker else None
    if stopper:
        held.callback(stopper.restore)
    else:   # the handler below takes SIGTERM; the one from before comes back when the run ends
        held.callback(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
    strategy = distribute.make_strategy(tc.distribute.strategy, tc.distribute.cpu_devices)
    chief = distribute.is_chief(strategy)
    if chief:   # a second run into the same --out is refused here, before anything is traced or written
        held.enter_context(folder_lock(out, "train"))
    if tc.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(model_config.seed)
    keras.mixed_precision.set_global_policy(tc.precision)

    spec = DatasetSpec.load(records)
    _startup_checks(out, spec, model_config)
    val_set = None
    if tc.val_every:
        from mrgan_tf.training.validation import ValidationSet
        val_set = ValidationSet(spec)   # before anything is written: no validation patients is an error
    total = tc.total_steps
    run_dir = out if chief else os.path.join(out, "workers", f"{os.getpid()}")   # non-chief: scratch

    with strategy.scope():   # every worker resumes from the chief's checkpoints (a file system they share)
        model, manager = _compiled_model(model_config, tc, run_dir, resume_from=out)
    start = int(model.iteration.numpy())
    replicas = strategy.num_replicas_in_sync
    # The data pipeline opens every shard set it needs: a missing one fails here, before any write.
    ds = data.training_dataset(spec, model_config.mode, tc.batch_size * replicas, seed=model_config.seed,
                               skip_batches=start, unpaired_from_paired=tc.unpaired_from_paired,
                               n_iter=model_config.n_iter)
    sources = data.unpaired_sources(spec, model_config.mode, tc.unpaired_from_paired)
    if chief and sources:
        print(f"train: {data.describe_sources(sources, spec)}", flush=True)
    fixed = None
    if chief and (spec.count("paired_test") or spec.count("paired_train")):
        fixed = data.fixed_slices(spec, tc.image_slices)

    # ---- from here on the run folder is written
    if chief:
        checkpoints.save_run_config(out, model_config, records, spec.preprocess, precision=tc.precision,
                                    unpaired_sources=sources)
        atomic.remove_stale_temporaries(out)
        for path in checkpoints.remove_checkpoint_temporaries(out):
            logging.info("removed a half-written checkpoint a killed run left: %s", path)
    if start:
        logging.info("resuming %s from iteration %d", out, start)
    if start >= total:
        logging.info("%s already trained for %d >= %d iterations", out, start, total)

    val_cbs = []
    columns = ()
    if val_set is not None:
        from mrgan_tf.training.validation import PREFIX, selection_key
        key = selection_key(spec, tc.val_select)
        columns = [f"val_{PREFIX[d]}_{m}" for d in model.trained_directions for m in ("mae", "psnr", "ssim")]
    monitor = TrainingMonitor(run_dir, tc.log_every, tc.image_every, fixed, write=chief, extra_columns=columns)
    if val_set is not None:
        best = checkpoints.BestCheckpoint(model, run_dir, key, write=chief)
        val_cbs = [Validation(val_set, tc.val_every, key, best, run_dir, monitor, write=chief)]
    ckpt_cb = Checkpointing(manager, tc.checkpoint_every, before_save=[monitor.flush])
    guard = NaNGuard(ckpt_cb)
    if multiworker:
        scratch = tempfile.mkdtemp(prefix="mrgan-preemption-")
        held.callback(shutil.rmtree, scratch, True)
        stopper = WorkersStopTogether(strategy, ckpt_cb.save_now, scratch)
        held.callback(stopper.close)
    progress = [ProgressLines(total, tc.progress_every or max(1, (total - start) // 20), tc.progress_seconds)] \
        if chief and tc.verbose >= 1 else []
    t0 = time.perf_counter()
    if start < total:
        try:   # the checkpoint comes last: the history row of its iteration is written (and flushed) first;
            # the stopper after it, so its handler still answers a second signal during that save
            model.fit(ds, epochs=1, steps_per_epoch=total - start,
                      callbacks=[guard, *val_cbs, monitor, ckpt_cb, *([stopper] if stopper else []), *progress,
                                 *callbacks],
                      verbose=0, shuffle=False)   # progress: ProgressLines; the dataset shuffles itself
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            error = _corrupt_records_error(spec, e)
            if error is None:
                raise
            raise error from None
    seconds = time.perf_counter() - t0
    if guard.error:
        raise NonFiniteLoss(guard.error)
    summary = {"run_dir": out, "start_iteration": start, "iterations": int(model.iteration.numpy()),
               "seconds": seconds, "replicas": replicas, "global_batch": tc.batch_size * replicas,
               "checkpoint": manager.latest_checkpoint}
    if stopper and stopper.signal_name:   # stopped early: no export of a half-trained model
        summary["stopped_by"] = stopper.signal_name
        return summary
    if isinstance(stopper, StopOnSignal):
        stopper.phase = "finishing"   # also when nothing was left to train: a signal now abandons the export
    exported = _export_at_end(model, spec, out, tc, trained=start < total) if tc.export and chief else None
    if exported is not None:
        summary["export"], summary["export_checkpoint"] = exported
    best_record = checkpoints.read_best(out) if val_set is not None else None
    if best_record:
        summary["best"] = best_record
    return summary


def main(argv):
    fv = flags.FLAGS
    if not fv.records or not fv.out:
        raise app.UsageError("--records and --out are required (or a --flagfile that sets them)")
    # ValueError: a model option the config refuses (MRGANConfig, AugmentConfig), as before
    with cli.user_errors("train", also=(ValueError,)):
        model_config, train_config = configs_from_flags(fv)
        from mrgan_tf.training.preemption import EXIT_PREEMPTED, Preempted
        try:
            summary = train(fv.records, fv.out, model_config, train_config)
        except Preempted as e:
            what = ("during the export at the end: the last iteration is saved, the export was left unwritten; "
                    "run the same command again to export" if e.during == "finishing" else
                    "before training began (nothing new to save); run the same command again to resume")
            print(f"train: stopped by {e.signal_name} {what}", file=sys.stderr)
            return EXIT_PREEMPTED
    if summary.get("stopped_by"):
        print(f"train: stopped by {summary['stopped_by']} at iteration {summary['iterations']}, saved as "
              f"{summary['checkpoint']}; run the same command again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    print("\n".join(summary_lines(summary)))
    return 0


def summary_lines(summary: dict) -> list[str]:
    """What the CLI prints at the end: the iterations, the checkpoints it saved and the SavedModels it wrote."""
    from mrgan_tf.serving import export
    from mrgan_tf.training.checkpoints import BEST_DIR
    lines = [f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s -> {summary['run_dir']}"]
    if summary["checkpoint"]:
        lines.append(f"checkpoint of iteration {summary['checkpoint'].rsplit('-', 1)[1]}: {summary['checkpoint']}")
    if "best" in summary:
        best = summary["best"]
        lines.append(f"best checkpoint by validation {best['key']} ({best['value']:.4g}): iteration "
                     f"{best['iteration']}, {os.path.join(summary['run_dir'], BEST_DIR, best['checkpoint'])}")
    if "export" in summary:
        lines += export.written_lines(summary["export"], summary["export_checkpoint"])
    return lines


run = cli.entry_point(define_flags, main)
