"""Synthesize a whole volume through a TF Serving server (gRPC or REST).

Reads and slices the volume here exactly as synthesize does; only the generator runs on the server.

Examples:
  python -m mrgan_tf.client --server=localhost:8500 --ct=ct.nii.gz --out=syn_mr.nii.gz
  python -m mrgan_tf.client --server=http://localhost:8501 --mr=mr.mha --out=syn_ct.nii.gz

Common flags:
  --server=HOST:PORT     gRPC, or http://HOST:PORT for REST
  --ct=FILE | --mr=FILE  the input; --out=FILE the output (any format synthesize writes)
  --model_name --model_version   which served model (default: ct2mr for --ct, mr2ct for --mr; the latest)
  --tta=flip,shift       also send augmented copies, map them back and fuse them here; the spread is
                         written beside the output
"""
from mrgan_tf.inference.client import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
