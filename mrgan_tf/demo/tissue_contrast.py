"""Does a synthetic MR show the reference's tissue contrast? White over grey matter, per head.

A generator can reach a low L1 by painting a smooth brain; T1 contrast is what a
planner looks for. The check: mean synthetic intensity in white matter over that
in grey matter, against the same ratio in the reference MR of the same head,
within a tolerance (15 %). Both images are on the paper's 0-255 scale with the
records' MR normalisation (robust percentiles inside the body), so the ratios
are comparable.

Tissue labels of the demo's test heads come from the MNI152 grey/white matter
maps they were built from (mrgan_tf.demo.data): a head is replayed from its seed
(checked voxel for voxel against its CT on disk), which gives the labels on the
CT's anatomy (for the synthetic MR, made from the CT) and on the MR's (for the
reference MR, which the demo data misaligns by a few mm on purpose).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

TOLERANCE = 0.15


@dataclasses.dataclass(frozen=True)
class Contrast:
    wm_mean: float
    gm_mean: float
    n_wm: int
    n_gm: int

    @property
    def ratio(self) -> float:
        return self.wm_mean / self.gm_mean if self.gm_mean > 0 else float("nan")


def wm_over_gm(image, labels, wm_label: int, gm_label: int, mask=None) -> Contrast:
    """Mean of ``image`` in white matter and in grey matter (optionally inside ``mask``)."""
    image, labels = np.asarray(image, np.float64), np.asarray(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    inside = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    wm, gm = inside & (labels == wm_label), inside & (labels == gm_label)
    if not wm.any() or not gm.any():
        raise ValueError(f"no {'white' if not wm.any() else 'grey'} matter voxels in the labels")
    return Contrast(float(image[wm].mean()), float(image[gm].mean()), int(wm.sum()), int(gm.sum()))


def compare(synthetic: Contrast, reference: Contrast, tolerance: float = TOLERANCE) -> dict:
    rel = abs(synthetic.ratio - reference.ratio) / reference.ratio
    return {"synthetic_ratio": synthetic.ratio, "reference_ratio": reference.ratio, "relative_difference": rel,
            "within_tolerance": bool(rel <= tolerance), "tolerance": tolerance,
            "synthetic": dataclasses.asdict(synthetic), "reference": dataclasses.asdict(reference)}


# ---------------------------------------------------------------- the demo's test heads
def replay_demo_labels(data_dir, patient_id: str) -> dict[str, np.ndarray]:
    """Tissue labels of one demo patient on its CT's and its MR's anatomy ("labels", "mr_labels")."""
    from mrgan_tf.demo import patients
    from mrgan_tf.io.readers import read_volume
    data = Path(data_dir)
    summary = json.loads((data / "demo_summary.json").read_text())
    with open(data / patients.MANIFEST, newline="") as f:
        plan = [patients.PlannedPatient(**row) for row in csv.DictReader(f)]
    index = next((i for i, p in enumerate(plan) if p.patient_id == patient_id), None)
    if index is None:
        raise ValueError(f"{data}: no patient {patient_id!r} in {patients.MANIFEST}")
    spacing = float(summary["spacing_mm"])
    rng = np.random.default_rng([summary["seed"], index])           # as build_demo_dataset seeds it
    arrays, _, _ = patients.make_patient(plan[index], rng, spacing, max(1.0, spacing / 2), keep_labels=True)
    ct = read_volume(str(data / patient_id / "ct.nii.gz")).data
    if ct.shape != arrays["ct"][0].shape or not np.array_equal(ct, arrays["ct"][0].astype(np.int16)):
        raise ValueError(f"{data / patient_id}: replaying the demo generation does not give this CT "
                         "(data from another version?); rebuild the demo data")
    return {"labels": arrays["labels"][0], "mr_labels": arrays["mr_labels"][0]}


def demo_contrast(data_dir, export_dir, tolerance: float = TOLERANCE) -> dict:
    """The WM/GM check on every paired test head of a demo data set, with the run's ct2mr export."""
    from mrgan_tf.demo.anatomy import GM, WM
    from mrgan_tf.demo.patients import MANIFEST
    from mrgan_tf.inference.predictors import load_predictor
    from mrgan_tf.inference.synthesis import synthesize_volume
    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import mr_range, normalise_mr
    data = Path(data_dir)
    with open(data / MANIFEST, newline="") as f:
        heads = [r["patient_id"] for r in csv.DictReader(f) if r["role"] == "paired" and r["split"] == "test"]
    if not heads:
        raise ValueError(f"{data}: no paired test patients")
    predictor = load_predictor(str(export_dir), "ct2mr")
    per_head = {}
    for pid in heads:
        labels = replay_demo_labels(data, pid)
        ct = read_volume(str(data / pid / "ct.nii.gz"))
        mr = read_volume(str(data / pid / "mr.nii.gz")).data
        mask = read_volume(str(data / pid / "mask.nii.gz")).data > 0
        syn, _ = synthesize_volume(predictor, ct)
        ref = 255.0 * normalise_mr(mr, *mr_range(mr, mask, predictor.preprocess.mr_percentiles))
        per_head[pid] = compare(wm_over_gm(syn.data, labels["labels"], WM, GM, mask),
                                wm_over_gm(ref, labels["mr_labels"], WM, GM, mask), tolerance)
    syn_mean = float(np.mean([r["synthetic_ratio"] for r in per_head.values()]))
    ref_mean = float(np.mean([r["reference_ratio"] for r in per_head.values()]))
    rel = abs(syn_mean - ref_mean) / ref_mean
    return {"heads": per_head, "synthetic_ratio": syn_mean, "reference_ratio": ref_mean, "relative_difference": rel,
            "within_tolerance": bool(rel <= tolerance), "tolerance": tolerance}


def markdown(result: dict) -> str:
    """The report's lines: per head and over the test heads."""
    lines = ["WM/GM contrast of the MR-GAN synthetic MR on the paired test heads (mean intensity in white "
             f"matter over grey matter, MNI152 tissue maps; target: within {100 * result['tolerance']:.0f} % "
             "of the reference MR's ratio):", ""]
    for pid, r in result["heads"].items():
        lines.append(f"- {pid}: synthetic {r['synthetic_ratio']:.3f}, reference {r['reference_ratio']:.3f} "
                     f"({100 * r['relative_difference']:.1f} % apart)")
    lines.append(f"- **mean: synthetic {result['synthetic_ratio']:.3f}, reference {result['reference_ratio']:.3f}, "
                 f"{100 * result['relative_difference']:.1f} % apart: "
                 f"{'within' if result['within_tolerance'] else 'NOT within'} the target**")
    return "\n".join(lines)


def demo_markdown(data_dir, export_dir, tolerance: float = TOLERANCE) -> str:
    """``markdown(demo_contrast(...))``, or one line saying why it could not be computed."""
    try:
        return markdown(demo_contrast(data_dir, export_dir, tolerance))
    except (ValueError, OSError) as e:
        return f"WM/GM contrast not computed: {e}"
