"""Dose check of a synthetic CT: plan on the reference CT, recompute on the synthetic CT, compare.

A photon and a proton plan (pyRadPlan: pencil beams, generic machines) are optimised on the
reference CT and recomputed on the synthetic CT with the same beams and weights; the two doses are
scored as SynthRAD2025 does (mae_target, gamma 2%/2mm and 1%/1mm, DVH points). Writes dose.md
(printed too), dose.json, a dose-difference and a DVH picture, the doses as volumes and, for DICOM
CTs, RT Dose files. A comparison tool, not a clinical dose check. Needs the 'dose' extra.

Example:
  python -m mrgan_tf.dose --ct=data/p01/ct.nii.gz --sct=runs/syn/p01/syn_ct.nii.gz --out=runs/dose/p01

Common flags:
  --mask=FILE            body mask (default: the CT above -500 HU)
  --target=FILE          target mask (default: a synthetic comparison sphere in the brain)
  --oar=NAME=FILE        an organ at risk (repeat)
  --rtstruct=FILE        an RT Structure Set: --mask, --target, --oar then name its ROIs
  --modalities=photons   one plan only
  --resolution_mm=3      planning and dose grid
"""
from mrgan_tf.evaluation.dose.cli import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
