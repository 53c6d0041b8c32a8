"""Synthesize a whole volume: a CT in, a synthetic MR on the same grid out (or an MR in, a synthetic CT).

The input is a NIfTI, .mha/.nrrd file or a DICOM folder; the output is written in the format its
name says (a name without suffix: a DICOM series), with a provenance .json beside it. A synthetic
CT is in HU; a synthetic MR on the paper's 0-255 scale (or in --mr_reference's units).

Examples:
  python -m mrgan_tf.synthesize --model=runs/mrgan/export --ct=ct.nii.gz --out=syn_mr.nii.gz
  python -m mrgan_tf.synthesize --model=runs/sct --mr=mr.nii.gz --out=syn_ct.mha
  python -m mrgan_tf.synthesize --model=runs/mrgan/export --root=data/test --out_dir=runs/syn
  python -m mrgan_tf.synthesize --model=runs/sct_s1 --model=runs/sct_s2 --tta=flip --mr=mr.nii.gz --out=syn_ct.nii.gz

Common flags:
  --model=PATH           an export folder, a SavedModel or a training run (repeat it to fuse models)
  --server=HOST:PORT     a TF Serving server instead of --model
  --ct=FILE | --mr=FILE  with --out=FILE; or --root=DIR with --out_dir=DIR for every patient
  --tta=flip,shift       also predict augmented copies; with several --model, fused by --fusion, and
                         the per-voxel spread written beside the output (syn_ct_sd.nii.gz)
  --send=AET@HOST:PORT   also store a DICOM output in a PACS
  --overwrite --noprogress
"""
from mrgan_tf.inference.synthesize import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
