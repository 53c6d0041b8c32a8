"""The dose check's report: dose.json (every figure and its context) and dose.md (the tables a person reads)."""
from __future__ import annotations

import json
import math

from mrgan_tf.evaluation.dose.check import DoseResult
from mrgan_tf.evaluation.dose.metrics import GAMMA_CRITERIA

ENGINE = ("pyRadPlan 0.5.0 (matRad's Python port): pencil-beam photon and proton dose with the generic machines "
          "and the default HU-to-density table")
NOT_CLINICAL = ("A comparison tool for synthetic CTs, not a clinical dose check: a pencil-beam engine with a generic "
                "machine and HU-to-density table, plans made by this tool.")


def _num(v, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _clean(obj):
    """NaN -> None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def report_json(result: DoseResult, extra: dict | None = None) -> str:
    doc = {"engine": ENGINE, "caveat": NOT_CLINICAL,
           "definitions": {"mae_target": "mean |D_CT - D_sCT| / prescription over voxels with D_CT >= 90 % of the "
                                         "prescription (SynthRAD2025/metrics functions/dose_metrics.py)",
                           "gamma": "global 3-D gamma (pymedphys), % of reference voxels above the low-dose cutoff "
                                    "with gamma <= 1",
                           "dvh": "D_x: dose (Gy) that x % of the region receives at least; difference = synthetic "
                                  "- reference"},
           **result.summary(), **(extra or {})}
    return json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n"


def report_markdown(result: DoseResult) -> str:
    s, cfg = result.summary(), result.config
    modalities = list(result.plans)
    target = result.structures.target_name
    lines = [f"# Dose check: {s['synthetic']} against {s['reference']}", "",
             f"Plans optimised on the reference CT and recomputed on the synthetic CT with the same beams and "
             f"weights; {ENGINE}. {NOT_CLINICAL}", "",
             f"Prescription {cfg.prescription_gy:g} Gy in {cfg.fractions} fractions; planning grid "
             f"{' x '.join(map(str, s['grid']['shape']))} voxels of {cfg.resolution_mm:g} mm; target "
             f"{target!r} ({s['structures'][target]['source']}, {s['structures'][target]['voxels']} voxels).", "",
             "| figure | " + " | ".join(modalities) + " |", "|---|" + "---:|" * len(modalities)]
    plans = s["plans"]
    lines.append("| mae_target (% of prescription) | " +
                 " | ".join(_num(100 * plans[m]["mae_target"], 2) for m in modalities) + " |")
    for pct, mm in GAMMA_CRITERIA:
        key = f"gamma_{pct:g}%/{mm:g}mm"
        lines.append(f"| gamma pass rate {pct:g} %/{mm:g} mm (%) | " +
                     " | ".join(_num(plans[m][key], 1) for m in modalities) + " |")
    lines.append("| beams / beamlets | " + " | ".join(f"{plans[m]['beams']} / {plans[m]['beamlets']}"
                                                      for m in modalities) + " |")
    lines.append("| seconds: plan, recompute, figures | " + " | ".join(
        ", ".join(f"{v:.0f}" for v in plans[m]["seconds"].values()) for m in modalities) + " |")
    lines += ["", "DVH points in Gy: reference CT / synthetic CT (synthetic - reference).", "",
              "| region | point | " + " | ".join(modalities) + " |", "|---|---|" + "---:|" * len(modalities)]
    for region in result.structures.regions():
        for point in plans[modalities[0]]["dvh"][region]["reference"]:
            cells = []
            for m in modalities:
                d = plans[m]["dvh"][region]
                cells.append(f"{_num(d['reference'][point])} / {_num(d['synthetic'][point])} "
                             f"({'+' if d['difference'][point] >= 0 else ''}{_num(d['difference'][point])})")
            lines.append(f"| {region} | {point} | " + " | ".join(cells) + " |")
    if s["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"
