"""Convert a SynthRAD-style folder of CT/MR volumes into the MR-GAN records directory.

``<root>/<patient_id>/{ct,mr,mask}`` volumes -> four shard sets (paired_train,
unpaired_ct, unpaired_mr, paired_test) plus ``dataset.json`` and ``summary.json``
(docs/DESIGN.md, "Records"). Patients are read and prepared in worker processes;
the main process writes shards into a hidden temporary folder beside ``--out``
(``tfrecords_tools.atomic``'s rule) and renames it to ``--out`` only when everything
succeeded, so a failed or interrupted run leaves no partial output, and the next run
removes what a killed one left.

TensorFlow (through ``tfrecords_tools``) is imported only in the main process when
writing: the spawned workers import this module and must start fast.
"""
from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

from absl import flags, logging

from mrgan_tf import cli
from mrgan_tf.errors import UserError
from mrgan_tf.io.layout import SPLITS, LayoutError, PatientTask, holds_records, plan_patients, unsupported_inputs
from mrgan_tf.io.problems import split
from mrgan_tf.preprocess import SLICE_AXES, PreprocessConfig, plausibility
from mrgan_tf.preprocess.config import FIT_MODES, REGISTER_MODELS
from mrgan_tf.preprocess.plausibility import PlausibilityConfig
from mrgan_tf.records.convert import SET_IMAGES, PatientResult, convert_patient, patient_records
from mrgan_tf.records.spec import SET_NAMES, SPEC_NAME, VAL_SET, DatasetSpec
from mrgan_tf.records.summary import SUMMARY_NAME, _patient_entry, _summary, format_summary
from tfrecords_tools import atomic
from tfrecords_tools.folder_lock import folder_lock

ON_ERROR = ("fail", "skip")
# zlib level 1 instead of the default 6: the main process writes twice as fast, shards are
# ~6% larger, reading is as fast (docs/BENCHMARKS.md, make_records section).
COMPRESSION_LEVEL = 1
# Errors that mean "this patient's input is bad" (skippable with on_error="skip").


class MakeRecordsError(UserError, ValueError):
    """Bad input or configuration; the message names the file and the problem."""


# --------------------------------------------------------------------------- worker








class _Results:
    """Patient results in task order, computed by a process pool started at construction
    (so workers run while the main process imports TensorFlow). At most 2 x workers
    patients are in flight, which bounds memory. ``workers=0``: computed here, lazily."""

    def __init__(self, tasks: Sequence[PatientTask], cfg: PreprocessConfig, workers: int,
                 checks: PlausibilityConfig = PlausibilityConfig()):
        self._todo = iter(tasks)
        self._cfg = cfg
        self._checks = checks
        self._pending: collections.deque = collections.deque()
        self._ex = None
        if workers > 0:
            self._ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            for _ in range(2 * workers):
                self._submit()

    def _submit(self) -> None:
        task = next(self._todo, None)
        if task is not None:
            self._pending.append(self._ex.submit(convert_patient, task, self._cfg, self._checks))

    def __iter__(self) -> Iterator[PatientResult]:
        if self._ex is None:
            for task in self._todo:
                yield convert_patient(task, self._cfg, self._checks)
            return
        while self._pending:
            result = self._pending.popleft().result()
            self._submit()
            yield result

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- records


def set_fields(set_name: str, bits: int, channels: int = 1) -> dict:
    """The record schema of one shard set: ct and mr take ``channels`` (a 2.5D stack), the mask one (its centre)."""
    from tfrecords_tools import schema

    image_dtype = "uint8" if bits == 8 else "uint16"
    fields = {name: schema.Image("uint8", channels=1) if name == "mask"
              else schema.Image(image_dtype, channels=channels) for name in SET_IMAGES[set_name]}
    fields.update(patient_id=schema.String(), slice_index=schema.Int(), num_slices=schema.Int(),
                  placement=schema.Float(length=5), mr_range=schema.Float(length=2),
                  affine=schema.Float(length=16), volume_shape=schema.Int(length=3))
    return fields






# --------------------------------------------------------------------------- output directory


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to clobber records without --overwrite, and anything that is not a records directory."""
    if not out.exists():
        try:
            atomic.check_folder_path(out.parent, "parent folder of --out")
        except atomic.OutputError as e:
            raise MakeRecordsError(f"{out}: {e}") from None
        if not out.parent.is_dir():
            raise MakeRecordsError(f"{out}: parent folder {out.parent} does not exist")
        return
    if not out.is_dir():
        raise MakeRecordsError(f"{out}: --out exists and is not a directory")
    if holds_records(out):
        if not overwrite:
            raise MakeRecordsError(f"{out}: already holds records; pass --overwrite to replace them")
    elif any(out.iterdir()):
        raise MakeRecordsError(f"{out}: --out is a non-empty folder that does not hold records; "
                               "refusing to replace it (choose an empty or new folder)")


# --------------------------------------------------------------------------- main entry


def make_records(root: str | os.PathLike, out: str | os.PathLike, cfg: PreprocessConfig | None = None, *,
                 test_patients: int | Sequence[str] = 2, split_seed: int = 0,
                 val_patients: int | Sequence[str] = 0,
                 manifest: str | os.PathLike | None = None, on_error: str = "fail", overwrite: bool = False,
                 workers: int = 2, examples_per_shard: int = 512, progress: bool = True,
                 checks: PlausibilityConfig = PlausibilityConfig()) -> dict[str, Any]:
    """Convert ``root`` into the records directory ``out``; returns the summary dict.

    With workers, the caller's script needs the ``if __name__ == "__main__":`` guard
    (spawned processes). Raises MakeRecordsError (or VolumeError) naming the file on bad
    input; nothing is left in ``out`` then.

    Args:
        root: the dataset root, ``<root>/<patient_id>/{ct,mr,mask}`` (``io.layout``).
        out: the records directory to write (created; replaced only with ``overwrite``).
        cfg: preprocessing (default ``PreprocessConfig()``); written to ``dataset.json``.
        test_patients: a count of paired patients held out (seeded hash order) or their ids.
        split_seed: seed of that choice.
        val_patients: a count or ids of paired validation patients (disjoint from the test ones).
        manifest: a CSV patient_id,role,split that decides roles and the split instead.
        on_error: "fail" at the first bad patient, or "skip" it (listed in the summary).
        overwrite: replace an existing records directory.
        workers: worker processes preparing patients (0: in this process; debugging, tests).
        examples_per_shard: records per shard file.
        progress: show a progress bar.
        checks: which plausibility problems are accepted as warnings (``plausibility``).
    """
    start = time.perf_counter()
    cfg = cfg or PreprocessConfig()
    if on_error not in ON_ERROR:
        raise MakeRecordsError(f"--on_error must be one of {ON_ERROR}, got {on_error!r}")
    if workers < 0:
        raise MakeRecordsError(f"--workers must be >= 0, got {workers}")
    out = Path(out).absolute()
    check_output(out, overwrite)
    with folder_lock(out, "make_records"):   # one writer per --out: a second run is refused, naming this one
        return _make_records(root, out, cfg, test_patients, split_seed, val_patients, manifest, on_error, overwrite,
                             workers, examples_per_shard, progress, checks, start)


def _make_records(root, out: Path, cfg: PreprocessConfig, test_patients, split_seed, val_patients, manifest,
                  on_error: str, overwrite: bool, workers: int, examples_per_shard: int, progress: bool,
                  checks: PlausibilityConfig, start: float) -> dict[str, Any]:
    atomic.remove_stale_temporaries(out.parent)   # before the root is listed: --out may lie inside it
    try:
        tasks, failed, unlisted, not_patients = plan_patients(
            root, test_patients=test_patients, split_seed=split_seed, manifest=manifest, val_patients=val_patients,
            accept=checks.accept)
    except LayoutError as e:
        raise MakeRecordsError(str(e)) from None
    if failed and on_error == "fail":
        raise MakeRecordsError(next(iter(failed.values())))
    if not tasks:
        raise MakeRecordsError(f"{root}: no usable patients" + (f" (failed: {failed})" if failed else ""))
    if unlisted:
        logging.warning("%d patient folder(s) not in the manifest are left out: %s", len(unlisted), unlisted)

    try:
        tmp = Path(atomic.temporary_folder(out))
    except OSError as e:
        raise MakeRecordsError(_write_failure(out, e)) from None
    patients: dict[str, dict[str, Any]] = {}
    stage = collections.Counter()
    try:
        with contextlib.ExitStack() as stack:
            results = stack.enter_context(contextlib.closing(_Results(tasks, cfg, workers, checks)))
            from tfrecords_tools import writer as tfw  # TensorFlow: imported while the workers start

            names = SET_NAMES + ((VAL_SET,) if any(t.set_name == VAL_SET for t in tasks) else ())
            writers = {name: stack.enter_context(tfw.ShardedWriter(tmp, name,
                                                                  set_fields(name, cfg.bits, cfg.channels),
                                                                  examples_per_shard=examples_per_shard,
                                                                  compression_level=COMPRESSION_LEVEL))
                       for name in names}
            bar = stack.enter_context(_progress(len(tasks), progress))
            for result in results:
                task = result.task
                bar.update(1)
                if result.error is not None:
                    if on_error == "fail":
                        hint = " (or --on_error=skip to leave the patient out)" if result.problem_kinds else ""
                        raise MakeRecordsError(result.error + hint)
                    logging.warning("skipping patient %s: %s", task.patient_id, result.error)
                    failed[task.patient_id] = result.error
                    patients[task.patient_id] = _patient_entry(task, result, result.error)
                    continue
                stage.update(result.cpu_seconds)
                t0 = time.process_time()
                w = writers[task.set_name]
                for record in patient_records(result):
                    w.write(record)
                stage["write"] += time.process_time() - t0
                patients[task.patient_id] = _patient_entry(task, result, None)
        sets = {name: w.info for name, w in writers.items()}
        if not any(info["count"] for info in sets.values()):
            raise MakeRecordsError(f"{root}: no slices written (failed patients: {sorted(failed) or 'none'}; "
                                   f"slices need a body mask covering >= min_foreground={cfg.min_foreground})")
        for pid, error in failed.items():  # folders that failed before conversion
            unsupported = split(unsupported_inputs(Path(root) / pid), checks.accept)[0]
            patients.setdefault(pid, {"error": error, **({"problems": sorted({p.kind for p in unsupported})}
                                                         if unsupported else {})})
        ok = [t for t in tasks if t.patient_id not in failed]
        spec = DatasetSpec(root=str(out), preprocess=cfg, sets=sets,
                           split={s: [t.patient_id for t in ok if t.split == s] for s in SPLITS
                                  if s != "val" or any(t.split == s for t in ok)},
                           patients=patients, extra={"source_root": str(Path(root).absolute())})
        seconds = time.perf_counter() - start
        summary = _summary(out, tasks, failed, unlisted, not_patients, patients, sets, stage, seconds, workers)
        tfw.atomic_write_text(tmp / SPEC_NAME, json.dumps(spec.to_dict(), indent=1) + "\n")
        tfw.atomic_write_text(tmp / SUMMARY_NAME, json.dumps(summary, indent=1) + "\n")
        check_output(out, overwrite)  # still true? (another run may have written meanwhile)
        atomic.swap_in_directory(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) or _is_write_error(e):   # reads are the workers' (patient errors)
            raise MakeRecordsError(_write_failure(out, e)) from None
        raise
    return summary


def _is_write_error(e: BaseException) -> bool:
    """TensorFlow's file errors (a TFRecord shard that cannot be written: disk full, size limit)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(e, tf.errors.OpError)


def _write_failure(out: Path, e: BaseException) -> str:
    reason = atomic.describe_os_error(e) if isinstance(e, OSError) else (
        f"{type(e).__name__}: {getattr(e, 'message', '') or 'a write failed'}")
    try:
        free = f"; {shutil.disk_usage(out.parent).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        free = ""
    return (f"{out}: cannot write the records ({reason}{free}); nothing was written (an earlier output is kept "
            "as it was)")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="patient", desc="make_records", disable=not enabled, file=sys.stderr)






# --------------------------------------------------------------------------- CLI

# Field -> flag: one per PreprocessConfig field, typed and defaulted by it (validated there, once).
PREPROCESS_FLAGS = {
    "spacing_mm": cli.Flag("Isotropic voxel size after resampling (mm)."),
    "image_size": cli.Flag("Slice size S (records hold S x S images)."),
    "fit": cli.Flag("pad: centred pad/crop at the resampled pixel size; resize: scale the longer side to S, then "
                    "pad.", FIT_MODES),
    "ct_window_center": cli.Flag("CT window centre (HU)."),
    "ct_window_width": cli.Flag("CT window width (HU)."),
    "ct_range": cli.Flag("lo,hi: store CT over this HU interval instead of the window, e.g. -1024,3000 (SynthRAD's "
                         "clip) for a synthetic CT in real HU; needs --bits=16."),
    "mr_percentiles": cli.Flag("MR normalisation percentiles lo,hi inside the body."),
    "bits": cli.Flag("Stored image depth.", ("8", "16")),
    "min_foreground": cli.Flag("Keep slices whose body area is at least this fraction of the patient's largest "
                               "body slice."),
    "max_body_loss": cli.Flag("Fail when more than this fraction of a patient's body falls outside the S x S "
                              "canvas (pad fit)."),
    "body_threshold_hu": cli.Flag("CT body mask threshold (HU)."),
    "register": cli.Flag("Register MR to CT by mutual information (--register_model; else world coordinates)."),
    "register_skull_hu": cli.Flag("CT voxels above this are left out of the registration metric."),
    "register_model": cli.Flag("Registration transform: rigid (default) or affine (the paper).", REGISTER_MODELS),
    "context_slices": cli.Flag("2.5D: every record carries its slice and the k neighbouring slices on each side "
                               "(2k+1 channels, clamped at the volume's ends)."),
    "slice_axis": cli.Flag("Plane the images are cut in (of the canonical RAS+ volume; docs/DESIGN.md).",
                           SLICE_AXES),
}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Define the CLI flags (only when run as a program, so importers' flags never collide)."""
    flags.DEFINE_string("root", None, "Input folder: <root>/<patient_id>/ct.nii.gz, mr.nii.gz [, mask.nii.gz].",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "Output records directory.", flag_values=fv)
    flags.DEFINE_string("manifest", None, "CSV with columns patient_id,role,split (role paired|ct|mr, "
                        "split train|test|val) overriding roles and the split.", flag_values=fv)
    flags.DEFINE_string("test_patients", "2", "Number of paired test patients (chosen by a seeded hash of the ids) "
                        "or a comma-separated list of patient ids.", flag_values=fv)
    flags.DEFINE_string("val_patients", "0", "Number of paired validation patients (disjoint from train and "
                        "test; used by train --val_every to pick the best checkpoint) or a list of ids.",
                        flag_values=fv)
    flags.DEFINE_integer("split_seed", 0, "Seed of the test-patient choice.", flag_values=fv)
    flags.DEFINE_enum("on_error", "fail", list(ON_ERROR), "fail: stop at the first bad patient; "
                      "skip: leave bad patients out and list them in the summary.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing records directory.", flag_values=fv)
    flags.DEFINE_integer("workers", 2, "Worker processes preparing patients (0: in the main process).",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("examples_per_shard", 512, "Records per shard file.", lower_bound=1, flag_values=fv)
    flags.DEFINE_list("accept", [], "Plausibility problems to accept as warnings (named in summary.json): "
                      f"{', '.join(plausibility.ACCEPTABLE)}.", flag_values=fv)
    flags.DEFINE_float("unsigned_ct_offset", None, "Subtract this (e.g. 1024) from CTs that look like unsigned "
                       "HU+1024 (no value below 0); other CTs are left alone.", flag_values=fv)
    flags.DEFINE_list("series_uid", [], "SeriesInstanceUID(s) to read when a DICOM folder holds several series "
                      "(each folder takes the one listed UID it holds).", flag_values=fv)
    cli.define_field_flags(fv, PreprocessConfig, PREPROCESS_FLAGS)


def config_from_flags(fv: flags.FlagValues = flags.FLAGS) -> PreprocessConfig:
    """PreprocessConfig from the preprocessing flags (one flag per field, validated by the dataclass)."""
    try:
        return PreprocessConfig(**cli.field_values(fv, PREPROCESS_FLAGS, PreprocessConfig))
    except (ValueError, UserError) as e:
        raise MakeRecordsError(str(e)) from None


def checks_from_flags(fv: flags.FlagValues = flags.FLAGS) -> PlausibilityConfig:
    """PlausibilityConfig from --accept, --unsigned_ct_offset and --series_uid."""
    try:
        return PlausibilityConfig(accept=tuple(fv.accept), unsigned_ct_offset=fv.unsigned_ct_offset,
                                  series_uids=tuple(fv.series_uid))
    except ValueError as e:
        raise MakeRecordsError(str(e)) from None


def parse_test_patients(text: str, flag: str = "--test_patients") -> int | list[str]:
    """``"3"`` -> 3; ``"p01,p07"`` -> ["p01", "p07"]."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise MakeRecordsError(f"{flag} must be a count or a list of patient ids, got {text!r}")
    return ids


def main(argv: Sequence[str]) -> int:
    fv = flags.FLAGS
    cli.require_flags(fv, "root", "out")
    if fv["manifest"].present and fv["test_patients"].present:
        logging.warning("--manifest given: its split column decides the test patients; --test_patients ignored")
    with cli.user_errors("make_records"):
        summary = make_records(fv.root, fv.out, config_from_flags(fv),
                               test_patients=parse_test_patients(fv.test_patients), split_seed=fv.split_seed,
                               val_patients=parse_test_patients(fv.val_patients, "--val_patients"),
                               manifest=fv.manifest, on_error=fv.on_error, overwrite=fv.overwrite,
                               workers=fv.workers, examples_per_shard=fv.examples_per_shard,
                               checks=checks_from_flags(fv))
    print(format_summary(summary))
    return 0


run = cli.entry_point(define_flags, main)
