"""Build the small offline demo dataset (SynthRAD layout: <out>/<patient>/ct, mr, mask).

Real MR anatomy (Colin27, MNI152) and one real CT (Cranium), the other CTs simulated from the MR
anatomy; test patients come from an anatomy no training patient uses.

Example:
  python -m mrgan_tf.demo_data --out=runs/demo/data

Common flags:
  --out=DIR --overwrite  --seed=N  --size_scale=F (voxel size 2 mm / F)
"""
from mrgan_tf.demo.data import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
