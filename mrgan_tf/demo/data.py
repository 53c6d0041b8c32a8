"""Build a small demo dataset in the SynthRAD2023 layout from anatomy shipped offline.

No paired head CT/MR exists offline, so the demo set mixes real and simulated data:

- real MR anatomy: Colin27 (Debian ``mricron-data``, T1 with skull) and the
  MNI152 2009 T1 template (PyPI ``nilearn``, skull-stripped);
- one real CT: Debian ``invesalius-examples``' ``Cranium.inv3`` (kept in HU);
- simulated: every other CT (HU assigned per tissue class segmented from the
  MR anatomy, then blurred and noised), the skull and scalp around MNI152, and
  per-patient deformations, MR bias fields, MR noise and CT/MR misalignment.

Test patients come from a base anatomy that no training patient uses, so the
test split measures generalisation to an unseen head, not to a new deformation.

    python -m mrgan_tf.demo_data --out DIR [--seed 0] [--size_scale 1.0]

``build_demo_dataset`` is the importable entry point.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from absl import flags
from tqdm import tqdm

from mrgan_tf import cli
from mrgan_tf.demo import anatomy
from mrgan_tf.demo.patients import MANIFEST, MANIFEST_COLUMNS, make_patient, plan_patients
from mrgan_tf.errors import UserError
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_nifti
from tfrecords_tools.atomic import swap_in_directory

log = logging.getLogger(__name__)
BASE_SPACING_MM = 2.0  # output voxel size at size_scale 1 (divided by size_scale)


class DemoDataError(UserError, RuntimeError):
    """The demo set cannot be built (bad output folder, no source anatomy)."""


def _readme(summary: dict) -> str:
    """README.txt: exactly what in this folder is real and what is simulated."""
    lines = [
        "mrgan-tf demo data set (SynthRAD2023 Task 1 layout: <patient>/ct.nii.gz, mr.nii.gz, mask.nii.gz)",
        f"Built by `python -m mrgan_tf.demo_data` with seed {summary['seed']}, "
        f"size_scale {summary['size_scale']}, voxel size {summary['spacing_mm']:g} mm.",
        "demo_manifest.csv lists every patient's role, split and base anatomy; demo_summary.json",
        "holds the per-patient details (including each paired patient's CT/MR misalignment).",
        "",
        "NOT FOR CLINICAL OR RESEARCH CONCLUSIONS. No real paired CT/MR of one head is in this folder.",
        "",
        "REAL:",
    ]
    bases = set(summary["train_bases"]) | set(summary["test_bases"])
    if "colin27" in bases:
        lines += ["- MR anatomy and T1 contrast of Colin27: single-subject T1 with skull (Debian",
                  "  mricron-data ch2.nii.gz; brain mask from ch2bet.nii.gz)."]
    if "mni152" in bases:
        lines += ["- MR anatomy and T1 contrast of the MNI152 2009 T1 template (nilearn; an average of",
                  "  152 brains, skull-stripped)."]
    if "cranium" in bases:
        lines += ["- The ct_only patient with base_subject 'cranium': a real head CT (Debian",
                  "  invesalius-examples Cranium.inv3) in its real HU, cropped to the head and",
                  "  resampled (a headrest arc is visible)."]
    lines += [
        "",
        "SIMULATED:",
        "- Every other CT: tissue classes segmented from the MR anatomy (air, soft tissue, fat,",
        "  skull, CSF, grey and white matter, air cavities) get typical HU (-1000, 40, -90,",
        "  ~1100 +/- 250, 15, 40, 25, -1000), smooth per-patient variation, 10-20 HU Gaussian",
        "  noise and a 0.7-voxel Gaussian partial-volume blur (which leaves ~3-5 HU of correlated",
        "  noise, close to the real Cranium CT). Colin27's skull is the dark T1 band between",
        "  brain and scalp, so it is approximate (sinuses near the brain count as bone).",
        "- MNI152 has no skull: a synthetic CSF/skull (5-8 mm)/muscle/fat shell is drawn around",
        "  its brain for both the CT and the MR.",
        "- Each patient is its base anatomy under a random affine (rotation <= 8 deg, scale",
        "  0.9-1.1, shift <= 4 mm) and a smooth ~2.5 mm warp; patients of one base are NOT",
        "  independent people.",
        "- MR: smooth multiplicative bias field, random gain and Rician noise.",
        "- Paired MR are rigidly misaligned from their CT by 1-3 deg and 1-3 mm on purpose.",
        "- mask.nii.gz: body outline (holes filled), from the CT for paired patients.",
        "",
        f"Test patients use base anatomy {sorted(summary['test_bases'])}; training patients use "
        f"{sorted(summary['train_bases'])}.",
    ]
    if summary["warnings"]:
        lines += ["", "WARNINGS:"] + [f"- {w}" for w in summary["warnings"]]
    return "\n".join(lines) + "\n"


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DemoDataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DemoDataError(f"{out}: directory is not empty (pass --overwrite to replace it)")


def build_demo_dataset(out_dir, seed: int = 0, n_paired_train: int = 4, n_paired_test: int = 2,
                       n_unpaired_ct: int = 3, n_unpaired_mr: int = 3, size_scale: float = 1.0,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write the demo set to `out_dir` (atomically) and return its summary dict."""
    out = Path(out_dir)
    counts = dict(n_paired_train=n_paired_train, n_paired_test=n_paired_test,
                  n_unpaired_ct=n_unpaired_ct, n_unpaired_mr=n_unpaired_mr)
    for name, n in counts.items():
        if n < 0:
            raise DemoDataError(f"{out}: {name} must be >= 0, got {n}")
    if not 0.1 <= size_scale <= 2.0:
        raise DemoDataError(f"{out}: size_scale must be in [0.1, 2], got {size_scale}")
    _check_out_dir(out, overwrite)

    spacing = BASE_SPACING_MM / size_scale
    work = max(1.0, spacing / 2)  # segment the bases at half the output voxel size
    warnings = []
    train_base = anatomy.TRAIN_BASE
    if not anatomy.debian_available():
        train_base = anatomy.TEST_BASE
        warnings.append(f"Debian mricron-data not found in {anatomy.MRICRON_DIR}: only MNI152 (nilearn) is used, "
                        "so test patients share their base anatomy with training patients")
    with_cranium = anatomy.CRANIUM_INV3.is_file()
    if not with_cranium and n_unpaired_ct:
        warnings.append(f"{anatomy.CRANIUM_INV3} not found: every unpaired CT is simulated")
    for w in warnings:
        log.warning(w)

    plan = plan_patients(n_paired_train, n_paired_test, n_unpaired_ct, n_unpaired_mr, train_base, with_cranium)
    summary = {
        "out_dir": str(out), "seed": seed, "size_scale": size_scale, "spacing_mm": spacing,
        **counts, "warnings": warnings, "patients": {},
        "train_bases": sorted({p.base_subject for p in plan if p.split == "train"}),
        "test_bases": sorted({p.base_subject for p in plan if p.split == "test"}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for index, p in enumerate(tqdm(plan, desc="demo patients", unit="patient", disable=not progress)):
            rng = np.random.default_rng([seed, index])
            arrays, affine, record = make_patient(p, rng, spacing, work)
            for name, (data, dtype) in arrays.items():
                write_nifti(Volume(data, affine, f"demo:{p.patient_id}"), tmp / p.patient_id / f"{name}.nii.gz",
                            dtype=dtype)
            record["shape"] = list(arrays["mask"][0].shape)
            summary["patients"][p.patient_id] = record
        with open(tmp / MANIFEST, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows([dataclasses.astuple(p) for p in plan])
        summary["total_bytes"] = sum(f.stat().st_size for f in tmp.rglob("*.nii.gz"))
        (tmp / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "README.txt").write_text(_readme(summary))
        swap_in_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


# --------------------------------------------------------------------------- CLI

def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program, so that other CLIs (e.g. the end-to-end demo) can
    import build_demo_dataset and define their own --out/--seed."""
    flags.DEFINE_string("out", None, "Output folder (must be empty or absent unless --overwrite).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives identical arrays.", flag_values=fv)
    flags.DEFINE_integer("n_paired_train", 4, "Paired CT/MR training patients.", flag_values=fv)
    flags.DEFINE_integer("n_paired_test", 2, "Paired CT/MR test patients (base anatomy unseen in training).",
                         flag_values=fv)
    flags.DEFINE_integer("n_unpaired_ct", 3, "CT-only training patients (the first is the real Cranium CT).",
                         flag_values=fv)
    flags.DEFINE_integer("n_unpaired_mr", 3, "MR-only training patients.", flag_values=fv)
    flags.DEFINE_float("size_scale", 1.0, "Resolution factor: voxel size is 2 mm / size_scale.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out folder.", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    with cli.user_errors("demo_data"):
        summary = build_demo_dataset(fv.out, fv.seed, fv.n_paired_train, fv.n_paired_test, fv.n_unpaired_ct,
                                     fv.n_unpaired_mr, fv.size_scale, fv.overwrite)
    print(f"wrote {len(summary['patients'])} patients ({summary['total_bytes'] / 1e6:.1f} MB) to {fv.out}")
    return 0


run = cli.entry_point(define_flags, main, "demo_data")
