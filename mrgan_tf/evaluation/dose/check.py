"""``dose_check``: plan on the reference CT, recompute on the synthetic CT with the same weights, score.

The library entry points (the command line and any other tool call them); they write nothing.
``plan_reference`` + ``check_synthetic`` plan once per patient and check several synthetic CTs.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np

from mrgan_tf.evaluation.dose import engine
from mrgan_tf.evaluation.dose.config import DoseConfig
from mrgan_tf.evaluation.dose.inputs import PlanningCTs, check_ct, check_overlap, planning_cts, reference_grid
from mrgan_tf.evaluation.dose.metrics import DVH_POINTS, GAMMA_CRITERIA, dvh_points, gamma_pass_rate, mae_target
from mrgan_tf.evaluation.dose.structures import Structures, build_structures
from mrgan_tf.io.volumes import Volume


@dataclasses.dataclass
class ModalityResult:
    """One plan's doses (Gy, planning grid) and figures."""

    modality: str
    reference: np.ndarray
    synthetic: np.ndarray
    figures: dict
    beams: int
    beamlets: int
    seconds: dict[str, float]


@dataclasses.dataclass
class DoseResult:
    """Everything ``dose_check`` found: the grid, the structures, what the inputs needed, each plan."""

    cts: PlanningCTs
    structures: Structures
    config: DoseConfig
    plans: dict[str, ModalityResult]
    notes: list[str]

    @property
    def grid(self) -> Volume:
        return self.cts.reference

    def summary(self) -> dict:
        """The figures and their context as plain JSON types."""
        c = self.cts
        return {
            "reference": c.reference.source, "synthetic": c.synthetic.source,
            "config": dataclasses.asdict(self.config),
            "grid": {"shape": list(c.reference.shape), "spacing_mm": [float(s) for s in c.reference.spacing]},
            "structures": {name: {"source": self.structures.sources.get(name, ""), "voxels": int(m.sum())}
                           for name, m in self.structures.regions().items()},
            "synthetic_target": self.structures.synthetic_target,
            "inputs": {"overlap": c.overlap, "hu_clipped_voxels": c.clipped,
                       "synthetic_missing_body_voxels": int((~c.synthetic_covered & self.structures.body).sum())},
            "notes": list(self.notes),
            "plans": {m: {"beams": r.beams, "beamlets": r.beamlets, "seconds": r.seconds, **r.figures}
                      for m, r in self.plans.items()},
        }


def score(reference: np.ndarray, synthetic: np.ndarray, structures: Structures, spacing, config: DoseConfig) -> dict:
    """mae_target, gamma pass rates and DVH points (reference, synthetic, synthetic - reference) per region."""
    out = {"mae_target": mae_target(reference, synthetic, config.prescription_gy)}
    for pct, mm in GAMMA_CRITERIA:
        out[f"gamma_{pct:g}%/{mm:g}mm"] = gamma_pass_rate(reference, synthetic, spacing, pct, mm,
                                                          config.gamma_cutoff_percent)
    dvh = {}
    for name, mask in structures.regions().items():
        points = DVH_POINTS if name == structures.target_name else (2,)
        ref, syn = dvh_points(reference, mask, points), dvh_points(synthetic, mask, points)
        dvh[name] = {"reference": ref, "synthetic": syn, "difference": {k: syn[k] - ref[k] for k in ref}}
    out["dvh"] = dvh
    return out


SYNTHETIC_TARGET_NOTE = ("the target is a synthetic sphere placed from the body mask: a comparison target for scoring "
                         "the synthetic CT, not a clinical one")


def _notes(cts: PlanningCTs, structures: Structures) -> list[str]:
    """What a reader of the figures must know: filled and clipped voxels, the kind of target."""
    notes = []
    missing = int((~cts.synthetic_covered & structures.body).sum())
    if missing:
        notes.append(f"{missing} body voxels of the planning grid lie outside the synthetic CT's field of view and "
                     f"were set to air ({int(structures.body.sum())} body voxels in all)")
    for which, n in cts.clipped.items():
        if n:
            notes.append(f"{n} voxels of the {which} CT lay outside the HU-to-density table's range "
                         "[-1024, 3000] HU and were clipped to it")
    if structures.synthetic_target:
        notes.append(SYNTHETIC_TARGET_NOTE)
    return notes


@dataclasses.dataclass
class ReferencePlans:
    """The plans optimised on one reference CT: any number of synthetic CTs can be checked against them."""

    reference: Volume              # HU on the planning grid
    clipped: int                   # reference voxels clipped to the HU-to-density table
    structures: Structures
    config: DoseConfig
    plans: dict[str, engine.Plan]


def plan_reference(reference: Volume, body: Volume | None = None, target: Volume | None = None,
                   oars: Mapping[str, Volume] | None = None, config: DoseConfig = DoseConfig(),
                   progress: bool = False, verbose: bool = False) -> ReferencePlans:
    """Optimise each of ``config.modalities`` on ``reference`` (HU) for its structures (masks on any grid
    that overlaps it; without a target, a synthetic comparison target is placed)."""
    from tqdm import tqdm

    engine.require_engine()
    grid, clipped = reference_grid(reference, config.resolution_mm)
    structures = build_structures(grid, body, target, oars, config.target_radius_mm)
    plans = {}
    for modality in tqdm(config.modalities, desc="plan on the reference CT", unit="plan", disable=not progress):
        t0 = time.perf_counter()
        plans[modality] = engine.make_plan(grid, structures, config, modality, verbose)
        plans[modality].seconds = round(time.perf_counter() - t0, 2)
    return ReferencePlans(grid, clipped, structures, config, plans)


def check_synthetic(reference: ReferencePlans, synthetic: Volume, progress: bool = False,
                    verbose: bool = False) -> DoseResult:
    """Recompute every plan of ``reference`` on ``synthetic`` (HU, any grid overlapping the reference) and score."""
    from tqdm import tqdm

    cts = planning_cts(reference.reference, reference.clipped, synthetic)
    structures, config = reference.structures, reference.config
    results = {}
    for modality, plan in tqdm(reference.plans.items(), desc="recompute on the synthetic CT", unit="plan",
                               disable=not progress):
        t0 = time.perf_counter()
        dose = engine.recompute(plan, cts.synthetic, structures, verbose)
        t1 = time.perf_counter()
        figures = score(plan.dose, dose, structures, cts.reference.spacing, config)
        seconds = {"plan": plan.seconds, "recompute": round(t1 - t0, 2), "figures": round(time.perf_counter() - t1, 2)}
        results[modality] = ModalityResult(modality, plan.dose, dose, figures, plan.beams, plan.beamlets, seconds)
    return DoseResult(cts, structures, config, results, _notes(cts, structures))


def dose_check(reference: Volume, synthetic: Volume, body: Volume | None = None, target: Volume | None = None,
               oars: Mapping[str, Volume] | None = None, config: DoseConfig = DoseConfig(), progress: bool = False,
               verbose: bool = False) -> DoseResult:
    """Plan each of ``config.modalities`` on ``reference`` (HU), recompute it on ``synthetic``, score both doses.

    ``body``, ``target`` and ``oars`` are masks on any grid that overlaps the reference; without a
    target a synthetic comparison target is placed (``structures.synthetic_target``). To check several
    synthetic CTs of one patient, plan once (``plan_reference``) and call ``check_synthetic`` for each.
    """
    check_ct(synthetic)              # the quick refusals first, before minutes of planning
    check_overlap(synthetic, reference)
    return check_synthetic(plan_reference(reference, body, target, oars, config, progress, verbose), synthetic,
                           progress, verbose)
