"""An evaluation's report: metrics.md (both conventions and the dose check, never mixed), the figures, latency.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from mrgan_tf.evaluation import figures
from mrgan_tf.evaluation import tables as metric_tables
from mrgan_tf.evaluation.dose.models import DOSE_TABLES, DoseEvaluation
from mrgan_tf.evaluation.grid import GRID_TABLES, UNCERTAINTY_METRICS, UNCERTAINTY_TABLES, GridResult
from mrgan_tf.evaluation.paper import DDOF, TABLES, ModelResult
from mrgan_tf.evaluation.patients import TestPatient

UNCERTAINTY_TEXT = (
    "### Is the uncertainty worth anything?\n\nFor a model of several predictions (several runs or checkpoints, "
    "test-time augmented copies), the per-voxel standard deviation of its predictions (the spread synthesize "
    "writes beside the output) on the same grid and inside the same mask as the scores above: the Spearman "
    "correlation of the spread with the absolute error (above 0: the spread ranks where the image is wrong), "
    "and the MAE in the 10 % of mask voxels with the largest spread against the MAE in the other 90 % (ties "
    "at the cut taken in array order).\n")


def _figure_slices(p: TestPatient, n: int) -> np.ndarray:
    """Up to n slices spread through the patient (the middle one first when n = 1)."""
    z = len(p.ct01)
    if n <= 1:
        return np.array([z // 2])
    return np.unique(np.linspace(0, z - 1, n + 2)[1:-1].round().astype(int))


def write_figures(out_dir: str, patients: Mapping[str, TestPatient], results: Mapping[str, ModelResult],
                  n_slices: int = 3) -> list[str]:
    """fig5_/fig7_ per patient (model name added with several models) and fig6.png for several models."""
    paths = []
    several = len(results) > 1
    fig6_rows, fig6_titles = [], []
    for pid, p in patients.items():
        idx = _figure_slices(p, n_slices)
        titles = [f"{pid} slice {p.slice_index[i]}" for i in idx]
        for name, res in results.items():
            tag = f"{name}_{pid}" if several else pid
            paths.append(figures.montage_fig5(os.path.join(out_dir, f"fig5_{tag}.png"),
                                              [(p.ct01[i] * 255, res.syn_mr[pid][i] * 255, p.mr01[i] * 255)
                                               for i in idx], titles))
            if pid in res.rec_ct:
                paths.append(figures.cycle_fig7(os.path.join(out_dir, f"fig7_{tag}.png"),
                                                [(p.ct01[i] * 255, res.syn_mr[pid][i] * 255, res.rec_ct[pid][i] * 255)
                                                 for i in idx], titles))
        mid = _figure_slices(p, 1)[0]
        fig6_rows.append({"Input CT": p.ct01[mid] * 255,
                          **{name: res.syn_mr[pid][mid] * 255 for name, res in results.items()},
                          "Reference MR": p.mr01[mid] * 255})
        fig6_titles.append(f"{pid} slice {p.slice_index[mid]}")
    if several:
        columns = ["Input CT", *results, "Reference MR"]
        paths.append(figures.comparison_fig6(os.path.join(out_dir, "fig6.png"), fig6_rows, columns, fig6_titles))
    return paths


def _latency_markdown(latency: Mapping[str, Mapping], sources: Mapping[str, str]) -> str:
    lines = ["| Model | Source | Slices | Batch | ms / slice | s / volume (avg slices) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, lat in latency.items():
        lines.append(f"| {name} | `{sources[name]}` | {lat['slices']} | {lat['batch_size']} | "
                     f"{lat['ms_per_slice']:.1f} | {lat['s_per_volume']:.2f} ({lat['slices_per_volume']:.0f}) |")
    return "\n".join(lines) + "\n"


def _tables(per_patient: Mapping[str, Mapping], tables: Mapping[str, tuple], level: str) -> list[str]:
    parts = []
    for title, keys in tables.items():
        if not any(k in row for rows in per_patient.values() for row in rows.values() for k in keys):
            continue
        parts.append(f"{level} {title}\n")
        parts.append(metric_tables.table_markdown(per_patient, keys, ddof=DDOF))
    return parts


def grid_markdown(grid: GridResult) -> str:
    """The SynthRAD-convention section: how it was computed, which masks were computed, its tables."""
    computed = sorted(pid for pid, src in grid.mask_source.items() if src == "computed")
    parts = ["## SynthRAD conventions: 3-D, each patient's original grid, inside the mask\n",
             "Every slice of the test patient's own CT (MR) through the generator and back onto that volume's "
             "grid (synthesize's code), scored against the original reference volume from "
             f"`{grid.root}`. As SynthRAD2023's evaluation code: MAE inside the mask on unclipped values; PSNR "
             "over the mask's voxels with both images clipped to [-1024, 3000] HU, data range 4024; 3-D SSIM "
             "(scikit-image, 7x7x7 window, K1 0.01, K2 0.03) on the volumes clipped, set to -1024 outside the "
             "mask and shifted by +1024, averaged inside the mask. MS-SSIM as SynthRAD2025's code (clip "
             "[-1024, 3071] HU, 5 levels). SynMR is put in the reference MR's units with the range the MR was "
             "normalised with; its PSNR, SSIM and MS-SSIM clip to the reference's range inside the mask and use "
             "its width as data range (MR has no fixed scale like HU). Not comparable with the paper's tables "
             "above.\n"]
    lo, hi = grid.ct_range
    parts.append(f"CT range of the models: {lo:g}..{hi:g} HU"
                 + (" (a display window): their synthetic CT cannot represent air or bone, so its sCT MAE measures "
                    "what the window clips, and synthesize refuses to write it as a CT without "
                    "--allow_windowed_ct.\n" if grid.ct_windowed else ".\n"))
    if computed:
        parts.append(f"No mask file for {', '.join(computed)}: scored inside the body mask computed from the CT "
                     "(CT > body_threshold_hu, largest component, holes filled).\n")
    parts += _tables(grid.rows, GRID_TABLES, "###")
    if any(k in row for rows in grid.rows.values() for row in rows.values() for k in UNCERTAINTY_METRICS):
        parts.append(UNCERTAINTY_TEXT)
        parts += _tables(grid.rows, UNCERTAINTY_TABLES, "###")
    if grid.notes:
        parts.append("Left out:\n\n" + "\n".join(f"- {n}" for n in grid.notes) + "\n")
    return "\n".join(parts)


def dose_markdown(dose: DoseEvaluation) -> str:
    """The dose section: what was planned and on what, the caveat, one table per modality, what was left out."""
    from mrgan_tf.evaluation.dose.report import ENGINE, NOT_CLINICAL

    cfg = dose.config
    beams = ", ".join(f"{len(cfg.angles(m))} coplanar {m[:-1]} beams" for m in cfg.modalities)
    parts = ["## Dose check of the synthetic CT\n",
             f"**{NOT_CLINICAL}** Engine: {ENGINE}.\n",
             f"Per test patient, a plan per modality ({beams}; {cfg.prescription_gy:g} Gy in {cfg.fractions} "
             f"fractions; {cfg.resolution_mm:g} mm planning and dose grid; {cfg.iterations} optimiser iterations) "
             "is optimised on the reference CT and recomputed on each model's synthetic CT (from the patient's MR, "
             "through the records' CT -> MR registration where they have one) with the same beams and weights, as "
             "SynthRAD2025 "
             "scores synthetic CTs. mae_target: mean |D_CT - D_sCT| over voxels with D_CT >= 90 % of the "
             "prescription, in % of the prescription; gamma: global 3-D gamma pass rate (pymedphys) above a "
             f"{cfg.gamma_cutoff_percent:g} % low-dose cutoff; ΔD98, ΔD2: the target's DVH points, synthetic - "
             "reference, in Gy. Body: the reference CT above -500 HU." +
             (" Target: a sphere of {:g} mm placed from the body mask (the dose command's synthetic comparison "
              "target), not a clinical one.".format(cfg.target_radius_mm) if dose.synthetic_target else "") +
             " Each patient's and model's report (dose.md, dose.json, dose-difference and DVH pictures, the "
             f"doses as volumes) is in `dose/<patient>/<model>/`. Avg±sd: population sd (ddof={DDOF}).\n"]
    parts += _tables(dose.rows, DOSE_TABLES, "###")
    left = [f"test patients beyond the first {len(dose.patients)} (--dose_patients): "
            f"{', '.join(dose.left_out_patients)}"] if dose.left_out_patients else []
    left += [f"model {name}: no MR -> CT generator, no synthetic CT to check" for name in dose.left_out_models]
    if left or dose.notes:
        parts.append("Left out and noted:\n\n" + "\n".join(f"- {n}" for n in left + dose.notes) + "\n")
    return "\n".join(parts)


def report_markdown(per_patient: Mapping[str, Mapping], latency: Mapping[str, Mapping],
                    sources: Mapping[str, str], dataset: str, grid: GridResult | None = None,
                    dose: DoseEvaluation | None = None) -> str:
    parts = [f"# Evaluation on `{dataset}`\n",
             "Two conventions in separate tables: the paper's (2-D fitted slices, 0-255 scale) and "
             + ("SynthRAD's (3-D, original grid, HU, inside the mask)." if grid is not None else
                "SynthRAD's (not computed here: --nogrid_metrics).") + "\n",
             "## Paper conventions: 2-D fitted slices, 0-255 scale\n",
             "Scores on the model's fitted slices. PSNR = 10 log10(255^2 / MSE), MSE pooled over each "
             "patient's slices; \"PSNR (paper conv.)\" is the authors' published formula, 48.13 dB higher, "
             "for comparison with the paper's Table I only. Avg±sd: mean over patients, population sd "
             f"(ddof={DDOF}) as in the paper.\n"]
    parts += _tables(per_patient, TABLES, "###")
    if grid is not None:
        parts.append(grid_markdown(grid))
    if dose is not None:
        parts.append(dose_markdown(dose))
    parts.append("## Inference latency\n")
    parts.append("CT -> MR generator only, after one warm-up call; a volume = one test patient's slices.\n")
    parts.append(_latency_markdown(latency, sources))
    return "\n".join(parts)
