"""Convert a folder of CT and MR volumes into the records MR-GAN trains on.

Reads <root>/<patient_id>/ct, mr and optionally mask (NIfTI, .mha/.nrrd or DICOM folders). Patients
with a CT and an MR are paired, the others feed the unpaired sets. Each patient is resampled,
optionally registered, cut into slices and written to the shard sets paired_train, unpaired_ct,
unpaired_mr and paired_test (and paired_val) with dataset.json and summary.json in --out. A run that
fails leaves no partial output.

Example:
  python -m mrgan_tf.make_records --root=data/synthrad/Task1/brain --out=data/records

Common flags:
  --root=DIR --out=DIR       the patient folders, and the records folder to write
  --flagfile=FILE            options from a file, e.g. configs/synthrad_sct_records.cfg
  --test_patients=N|IDS      paired patients held out for testing (--val_patients: for validation)
  --manifest=CSV             patient_id,role,split: roles and split chosen by you
  --register                 register each MR to its CT by mutual information (rigid; --register_model=affine)
  --image_size=S --spacing_mm=MM --bits=8|16 --ct_range=LO,HI   slice size and stored intensities
  --workers=N --overwrite --on_error=skip
"""
from mrgan_tf.records.make_records import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
