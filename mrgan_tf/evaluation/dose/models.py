"""The dose check of every model's synthetic CT on the test patients (``evaluate --dose``).

Per test patient one plan per modality is optimised on the reference CT (``plan_reference``) and
recomputed on each model's synthetic CT from the patient's MR (``check_synthetic``); each model's
dose report folder (as the ``dose`` command writes it) goes to ``<folder>/<patient>/<model>``. Only
models with an MR -> CT generator are checked, and only those whose CT range holds air and bone.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Mapping

import numpy as np

from mrgan_tf.evaluation.dose.config import MODALITIES, DoseConfig
from mrgan_tf.evaluation.patients import EvaluationError, TestPatient
from mrgan_tf.inference.predictors import Predictor
from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess import PreprocessConfig

FOLDER = "dose"   # under the evaluation's output folder
# Per modality: (row key suffix, figure of the dose check, scale); the tables' labels are in tables._DISPLAY.
FIGURES = (("mae_target", "mae_target", 100.0), ("gamma_2_2", "gamma_2%/2mm", 1.0),
           ("gamma_1_1", "gamma_1%/1mm", 1.0), ("target_d98_diff", ("D98",), 1.0),
           ("target_d2_diff", ("D2",), 1.0))
DOSE_TABLES = {f"{m.capitalize()}: planned on the CT, recomputed on the synthetic CT":
               tuple(f"{m}_{key}" for key, _, _ in FIGURES) for m in MODALITIES}
DOSE_METRICS = tuple(k for keys in DOSE_TABLES.values() for k in keys)


@dataclasses.dataclass
class DoseEvaluation:
    """Dose rows of every checked model, and what the report must say about them."""

    rows: dict[str, dict[str, dict[str, float]]]   # model -> patient -> figure (DOSE_METRICS)
    config: DoseConfig
    patients: list[str]                             # the test patients checked
    left_out_patients: list[str]                    # beyond the patient limit
    left_out_models: list[str]                      # no MR -> CT generator
    folders: dict[str, dict[str, str]]              # model -> patient -> report folder, relative to the output
    seconds: dict[str, dict]                        # patient -> {"wall", "cpu", "plan": s, "check": {model: s}}
    notes: list[str]
    synthetic_target: bool = True

    @property
    def metrics(self) -> tuple[str, ...]:
        """The row keys of the checked modalities."""
        return tuple(k for k in DOSE_METRICS if k.split("_")[0] in self.config.modalities)

    def to_json(self) -> dict:
        from mrgan_tf.evaluation.dose.report import ENGINE, NOT_CLINICAL

        return {"engine": ENGINE, "caveat": NOT_CLINICAL, "config": dataclasses.asdict(self.config),
                "patients": self.patients, "left_out_patients": self.left_out_patients,
                "left_out_models": self.left_out_models, "folders": self.folders, "seconds": self.seconds,
                "notes": self.notes, "synthetic_target": self.synthetic_target,
                "units": {"mae_target": "% of the prescription", "gamma": "% of voxels passing",
                          "target_d*_diff": "Gy, synthetic - reference"}}


def sct_models(loaded: Mapping[str, Mapping[str, Predictor]]) -> list[str]:
    """The models with an MR -> CT generator: the ones with a synthetic CT to check."""
    return [name for name, preds in loaded.items() if "mr2ct" in preds]


def check_models(models: Mapping[str, str], loaded: Mapping[str, Mapping[str, Predictor]],
                 cfg: PreprocessConfig) -> list[str]:
    """The names of the models to check; refused, before any slow step, when none can be or the engine is missing."""
    from mrgan_tf.evaluation.dose.engine import require_engine

    names = sct_models(loaded)
    if not names:
        raise EvaluationError(f"--dose: no model has an MR->CT generator ({', '.join(models.values())}): "
                              "there is no synthetic CT to check")
    if cfg.ct_windowed:
        lo, hi = cfg.ct_hu_range
        raise EvaluationError(f"--dose: {models[names[0]]}: the models' synthetic CT spans {lo:g}..{hi:g} HU, a "
                              "display window without air or bone: nothing to plan on (train on records made with "
                              "--ct_range=-1024,3000)")
    require_engine()
    return names


def synthetic_ct(predictor, mr: Volume, ct_to_mr: np.ndarray | None, batch_size: int, source: str) -> Volume:
    """The synthetic CT of ``mr`` (HU) on the MR's grid, placed in the CT's world (``ct_to_mr``: CT -> MR world)."""
    from mrgan_tf.inference.synthesis import synthesize_volume

    syn, _ = synthesize_volume(predictor, mr, batch_size)
    affine = mr.affine if ct_to_mr is None else np.linalg.inv(ct_to_mr) @ mr.affine
    return Volume(np.asarray(syn.data, np.float32), affine, source)


def row(result) -> dict[str, float]:
    """One model's figures on one patient (``DOSE_METRICS`` of its modalities)."""
    out = {}
    for modality, plan in result.plans.items():
        fig, target = plan.figures, plan.figures["dvh"][result.structures.target_name]["difference"]
        for key, name, scale in FIGURES:
            out[f"{modality}_{key}"] = float(target[name[0]] if isinstance(name, tuple) else fig[name]) * scale
    return out


def _line(pid: str, i: int, n: int, seconds: Mapping, rows: Mapping[str, Mapping]) -> str:
    figures = "; ".join(f"{name}: " + ", ".join(f"{m} mae_target {r[m + '_mae_target']:.2f} % gamma 2%/2mm "
                                                   f"{r[m + '_gamma_2_2']:.1f} %" for m in MODALITIES
                                                   if m + "_mae_target" in r)
                        for name, r in rows.items())
    return (f"dose: patient {pid} ({i}/{n}) in {seconds['wall']:.0f} s (CPU {seconds['cpu']:.0f} s)"
            + (f"; {figures}" if figures else ""))


def evaluate_dose(models: Mapping[str, str], loaded: Mapping[str, Mapping[str, Predictor]],
                  patients: Mapping[str, TestPatient], files: Mapping[str, Mapping[str, str | None]],
                  folder: str, config: DoseConfig = DoseConfig(), limit: int | None = None, batch_size: int = 16,
                  progress: bool = False, say: Callable[[str], None] | None = None) -> DoseEvaluation:
    """Check every model with an MR -> CT generator on the first ``limit`` test patients (default all); each
    report folder goes to ``folder/<patient>/<model>`` (``folder`` exists and is empty). ``files``: each
    patient's original ``ct`` and ``mr`` (``grid.original_files``). ``say`` gets a line per patient
    (default: standard error)."""
    from mrgan_tf.errors import UserError
    from mrgan_tf.evaluation.dose.check import SYNTHETIC_TARGET_NOTE, check_synthetic, plan_reference
    from mrgan_tf.evaluation.dose.cli import write_outputs
    from mrgan_tf.io.readers import read_volume

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    names = sct_models(loaded)
    pids = list(patients)[:limit]
    result = DoseEvaluation({name: {} for name in names}, config, pids, list(patients)[len(pids):],
                            [name for name in loaded if name not in names], {name: {} for name in names}, {}, [])
    for i, pid in enumerate(pids, 1):
        t0, cpu0 = time.perf_counter(), time.process_time()   # CPU time of every thread of the process
        ct, mr = read_volume(files[pid]["ct"]), read_volume(files[pid]["mr"])
        plans = plan_reference(ct, config=config, progress=progress)
        result.synthetic_target &= plans.structures.synthetic_target
        seconds = {"plan": round(time.perf_counter() - t0, 1), "check": {}}
        for name in names:
            t1 = time.perf_counter()
            sct = synthetic_ct(loaded[name]["mr2ct"], mr, patients[pid].ct_to_mr, batch_size,
                               f"{name}'s synthetic CT from {files[pid]['mr']}")
            try:
                checked = check_synthetic(plans, sct, progress)
            except UserError as e:   # a synthetic CT the check refuses (not a CT, no overlap): a finding, not a stop
                result.notes.append(f"patient {pid}, model {name}: no dose figures: {e}")
                continue
            out = os.path.join(folder, pid, name)
            os.makedirs(out)
            write_outputs(out, checked, elapsed=time.perf_counter() - t1 + seconds["plan"])
            result.rows[name][pid] = row(checked)
            result.folders[name][pid] = os.path.join(FOLDER, pid, name)
            result.notes += [f"patient {pid}, model {name}: {n}" for n in checked.notes
                             if n != SYNTHETIC_TARGET_NOTE]
            seconds["check"][name] = round(time.perf_counter() - t1, 1)
        result.seconds[pid] = {"wall": round(time.perf_counter() - t0, 1),
                               "cpu": round(time.process_time() - cpu0, 1), **seconds}
        say(_line(pid, i, len(pids), result.seconds[pid],
                  {n: result.rows[n][pid] for n in names if pid in result.rows[n]}))
    return result
