"""Summaries and tables of per-patient metrics (avg +- sd over patients): Markdown, CSV, JSON."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

# How each metric is printed in tables: (column label, decimals).
_DISPLAY = {
    "mae": ("MAE", 2),
    "mse": ("MSE", 2),
    "psnr": ("PSNR", 2),
    "psnr_paper": ("PSNR (paper conv.)", 2),
    "ssim": ("SSIM", 4),
    "mae_masked": ("MAE (mask)", 2),
    "psnr_masked": ("PSNR (mask)", 2),
    "ssim_masked": ("SSIM (mask)", 4),
    "mr_mae_phys": ("MAE (MR units)", 2),
    "mr_psnr_phys": ("PSNR (MR units)", 2),
    "mr_ssim_phys": ("SSIM (MR units)", 4),
    "ct_mae_hu": ("MAE (HU)", 1),
    "ct_psnr_hu": ("PSNR (HU)", 2),
    "ct_ssim_hu": ("SSIM (HU)", 4),
    "sct_mae": ("MAE HU", 1),
    "sct_psnr": ("PSNR dB", 2),
    "sct_ssim": ("SSIM 3-D", 4),
    "sct_ms_ssim": ("MS-SSIM 3-D", 4),
    "smr_mae": ("MAE (MR units)", 2),
    "smr_psnr": ("PSNR dB", 2),
    "smr_ssim": ("SSIM 3-D", 4),
    "smr_ms_ssim": ("MS-SSIM 3-D", 4),
    "sct_unc_spearman": ("Spearman(SD, |err|)", 3),
    "sct_unc_mae_top10": ("MAE HU top-10% SD", 1),
    "sct_unc_mae_rest": ("MAE HU other 90%", 1),
    "smr_unc_spearman": ("Spearman(SD, |err|)", 3),
    "smr_unc_mae_top10": ("MAE top-10% SD", 2),
    "smr_unc_mae_rest": ("MAE other 90%", 2),
}
# The dose check's figures (``evaluate --dose``), one table per modality: the same labels in each.
_DISPLAY.update({f"{m}_{key}": shown for m in ("photons", "protons") for key, shown in {
    "mae_target": ("mae_target %", 2), "gamma_2_2": ("gamma 2%/2mm %", 1), "gamma_1_1": ("gamma 1%/1mm %", 1),
    "target_d98_diff": ("ΔD98 target Gy", 2), "target_d2_diff": ("ΔD2 target Gy", 2)}.items()})
MISSING = "—"



def _num(v) -> float | None:
    """``v`` as a float, or None when missing/NaN/not a number."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _value(row: Mapping | None, key: str) -> float | None:
    """A metric value of a row, or None when the row or value is missing."""
    return None if row is None else _num(row.get(key))


def summarise(rows: Sequence[Mapping], keys: Iterable[str], ddof: int = 1) -> dict[str, dict]:
    """Mean and sample sd (``ddof=1``; 0 for a single row) of each key over rows.

    Rows missing a key (or holding NaN/None) are skipped for that key; ``n`` says
    how many counted. With no values, mean and sd are None. The paper's Table I
    sds are mostly population sds: pass ``ddof=0`` to compare with them.
    """
    out = {}
    for key in keys:
        vals = [v for v in (_value(r, key) for r in rows) if v is not None]
        if not vals:
            out[key] = {"mean": None, "sd": None, "n": 0}
            continue
        arr = np.asarray(vals, dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf values give a NaN sd, not a warning
            sd = float(np.std(arr, ddof=ddof)) if arr.size > ddof else 0.0
        out[key] = {"mean": float(np.mean(arr)), "sd": sd, "n": int(arr.size)}
    return out


def _patients(per_patient: Mapping[str, Mapping[str, Mapping]]) -> list[str]:
    """Union of patient ids over models, in order of first appearance."""
    seen: dict[str, None] = {}
    for rows in per_patient.values():
        for pid in rows:
            seen.setdefault(pid, None)
    return list(seen)


def _fmt(v: float | None, decimals: int) -> str:
    if v is None:
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{decimals}f}"


def table_markdown(per_patient: Mapping[str, Mapping[str, Mapping]],
                   metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim"),
                   ddof: int = 1) -> str:
    """Table I-style Markdown: one row per patient, columns metric x model, last row Avg±sd.

    ``per_patient[model][patient]`` is a metrics dict (e.g. from ``patient_metrics``).
    Missing values print as "—"; summaries skip them. ``ddof`` as in ``summarise``.
    """
    models = list(per_patient)
    patients = _patients(per_patient)
    header = ["Patient"] + [f"{_DISPLAY.get(k, (k, 2))[0]} {m}" for k in metrics for m in models]
    rule = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for pid in patients:
        cells = [pid]
        for k in metrics:
            dec = _DISPLAY.get(k, (k, 2))[1]
            cells += [_fmt(_value(per_patient[m].get(pid), k), dec) for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    summary = {m: summarise(list(per_patient[m].values()), metrics, ddof) for m in models}
    cells = ["Avg±sd"]
    for k in metrics:
        dec = _DISPLAY.get(k, (k, 2))[1]
        for m in models:
            s = summary[m][k]
            cells.append(MISSING if s["mean"] is None
                         else f"{_fmt(s['mean'], dec)}±{_fmt(s['sd'], dec)}")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(per_patient: Mapping[str, Mapping[str, Mapping]],
              metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim")) -> str:
    """Long-format CSV ``model,patient,metric,value`` (empty value when missing)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "patient", "metric", "value"])
    for model, rows in per_patient.items():
        for pid, row in rows.items():
            for k in metrics:
                v = _value(row, k)
                w.writerow([model, pid, k, "" if v is None else repr(v)])
    return buf.getvalue()


def table_json(per_patient: Mapping[str, Mapping[str, Mapping]],
               metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim"),
               ddof: int = 1) -> str:
    """Strict JSON ``{metrics, ddof, per_patient, summary}``; missing/non-finite values are null."""
    def clean(v):
        v = _num(v)
        return None if v is None or math.isinf(v) else v

    doc = {
        "metrics": list(metrics),
        "ddof": ddof,
        "per_patient": {m: {pid: {k: clean((row or {}).get(k)) for k in metrics}
                            for pid, row in rows.items()}
                        for m, rows in per_patient.items()},
        "summary": {m: {k: {kk: (clean(vv) if kk != "n" else vv) for kk, vv in s.items()}
                        for k, s in summarise(list(rows.values()), metrics, ddof).items()}
                    for m, rows in per_patient.items()},
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
