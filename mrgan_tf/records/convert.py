"""One patient's volumes -> its kept slices as record fields: the work each make_records worker does.

Imported by spawned worker processes, so it must start fast: no TensorFlow here."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator

import numpy as np

from mrgan_tf.io.layout import PatientTask
from mrgan_tf.io.problems import split
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import VolumeError
from mrgan_tf.preprocess import PreprocessConfig, context, plausibility, prepare_patient
from mrgan_tf.preprocess.plausibility import PlausibilityConfig

SET_IMAGES = {"paired_train": ("ct", "mr", "mask"), "unpaired_ct": ("ct", "mask"),
              "unpaired_mr": ("mr", "mask"), "paired_test": ("ct", "mr", "mask"),
              "paired_val": ("ct", "mr", "mask")}



_PATIENT_ERRORS = (VolumeError, ValueError, OSError)



@dataclasses.dataclass
class PatientResult:
    """A prepared patient, kept slices only (what the main process needs to write records)."""

    task: PatientTask
    error: str | None = None
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> (n_kept, S, S)
    slice_index: np.ndarray | None = None
    num_slices: int = 0
    placement: list[float] | None = None
    mr_range: tuple[float, float] | None = None
    affine: np.ndarray | None = None
    volume_shape: tuple[int, int, int] | None = None
    registration: dict | None = None
    body_voxels: int = 0
    body_voxels_outside: int = 0
    problem_kinds: tuple[str, ...] = ()     # plausibility kinds behind ``error`` or ``warnings``
    warnings: tuple[str, ...] = ()          # accepted problems (named in the summary)
    partial_mr_dropped: int = 0             # slice pairs dropped because their MR slice is empty
    ct_offset_hu: float = 0.0               # subtracted from an unsigned HU+1024 CT (--unsigned_ct_offset)
    cpu_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # CPU time: robust to a busy machine

    @property
    def n_kept(self) -> int:
        return 0 if self.slice_index is None else len(self.slice_index)



def _read_checked(task: PatientTask, checks: PlausibilityConfig) -> tuple[dict, list, float]:
    """The patient's volumes, read and checked for plausibility; (volumes, accepted problems, CT offset).

    Raises ``plausibility.ImplausibleInput`` with every unaccepted problem."""
    vols, problems, offset = {}, [], 0.0
    for m in ("ct", "mr", "mask"):
        path = getattr(task, m)
        vols[m] = read_volume(path, series_uid=checks.series_uids or None) if path else None
        if vols[m] is None or m == "mask":
            continue
        found = plausibility.check_volume(vols[m], m)
        if checks.unsigned_ct_offset is not None and any(p.kind == plausibility.UNSIGNED_CT for p in found):
            offset = float(checks.unsigned_ct_offset)
            vols[m] = plausibility.remove_unsigned_offset(vols[m], offset)
            found = [p for p in found if p.kind != plausibility.UNSIGNED_CT] + plausibility.check_volume(vols[m], m)
        problems += found
    errors, accepted = split(problems, checks.accept)
    if errors:
        raise plausibility.ImplausibleInput(errors)
    return vols, accepted, offset



def convert_patient(task: PatientTask, cfg: PreprocessConfig, checks: PlausibilityConfig = PlausibilityConfig()
                    ) -> PatientResult:
    """Read, check and prepare one patient (runs in a worker). Input problems come back as ``error``
    text, not exceptions: VolumeError does not survive pickling between processes.

    Slice pairs whose MR slice is empty (an MR shorter than its CT) are dropped and counted;
    a patient left with no slice is an error (not a patient of the records)."""
    t0 = time.process_time()
    who = f"patient {task.patient_id}"
    try:
        vols, accepted, offset = _read_checked(task, checks)
        t1 = time.process_time()
        prep = prepare_patient(vols["ct"], vols["mr"], vols["mask"], cfg)
    except plausibility.ImplausibleInput as e:
        return PatientResult(task, error=f"{who}: {e}", problem_kinds=e.kinds)
    except _PATIENT_ERRORS as e:
        return PatientResult(task, error=str(e) if isinstance(e, VolumeError) else f"{who}: {e}")
    t2 = time.process_time()
    problem = prep.body_loss_problem(cfg, f"{who} ({task.ct or task.mr})")
    if problem:
        return PatientResult(task, error=problem)
    keep = np.flatnonzero(prep.keep)
    warnings = [f"{who}: {p}" for p in accepted]
    dropped = 0
    if prep.ct is not None and prep.mr is not None and keep.size:
        empty = plausibility.empty_mr_slices(prep.mr[keep], prep.mask[keep])
        dropped = int(empty.sum())
        if dropped:
            warnings.append(f"{who}: {dropped} of {keep.size} slice pairs have an empty MR slice (the MR covers only "
                            f"part of the CT, {task.mr}); dropped")
            keep = keep[~empty]
    if not keep.size:
        source = task.ct or task.mr
        return PatientResult(task, error=f"{who}: " + str(plausibility.no_slices_problem(prep.shape, source,
                                                                                          cfg.min_foreground)),
                             problem_kinds=(plausibility.NO_SLICES,) + ((plausibility.PARTIAL_MR,) if dropped else ()))
    depth = context.depth_problem(prep.shape[2], cfg.context_slices, cfg.slice_axis)
    if depth:
        return PatientResult(task, error=f"{who}: {task.ct or task.mr}: {depth}")
    images = {"mask": prep.mask[keep]}
    for name in ("ct", "mr"):
        if getattr(prep, name) is not None:   # 2.5D: each kept slice with its neighbours of the whole volume
            images[name] = (context.neighbour_stack(getattr(prep, name), cfg.context_slices, keep)
                            if cfg.context_slices else getattr(prep, name)[keep])
    kinds = ((plausibility.UNSUPPORTED_FILE,) * bool(task.warnings) + tuple(p.kind for p in accepted)
             + ((plausibility.PARTIAL_MR,) if dropped else ()))
    return PatientResult(task, images=images, slice_index=keep, num_slices=int(prep.shape[2]),
                         placement=prep.placement.to_list(), mr_range=prep.mr_range, affine=prep.affine,
                         volume_shape=prep.shape, registration=prep.registration,
                         body_voxels=prep.body_voxels, body_voxels_outside=prep.body_voxels_outside,
                         problem_kinds=kinds, warnings=tuple(task.warnings) + tuple(warnings),
                         partial_mr_dropped=dropped, ct_offset_hu=offset,
                         cpu_seconds={"read": t1 - t0, "prepare": t2 - t1})



def patient_records(result: PatientResult) -> Iterator[dict[str, Any]]:
    """One record per kept slice of a prepared patient."""
    common = {"patient_id": result.task.patient_id, "num_slices": result.num_slices,
              "placement": np.asarray(result.placement, np.float64),
              "mr_range": np.asarray(result.mr_range if result.mr_range else (0.0, 0.0), np.float64),
              "affine": np.asarray(result.affine, np.float64).ravel(),
              "volume_shape": np.asarray(result.volume_shape, np.int64)}
    names = SET_IMAGES[result.task.set_name]
    for i, k in enumerate(result.slice_index):
        record = dict(common, slice_index=int(k))
        for name in names:
            image = result.images[name][i]
            record[name] = image if image.ndim == 3 else image[:, :, None]   # a 2.5D stack is (S, S, C) already
        yield record
