"""Client round trip through a TF Serving-like server vs in-process synthesize, one 150-slice volume.

    .venv/bin/python bench/bench_client.py --json /tmp/bench_client.json
    .venv/bin/python bench/bench_client.py --ngf=16 --n_blocks=3     # a cheaper generator: overhead shows more

A generator (default full size: ngf 64, 9 blocks, 256 x 256, random weights) is
exported with ``mrgan_tf.serving.export.export_generator`` (plus ``models.config``);
``tests/serving_double.py`` (a test
double of TF Serving's PredictionService: the TF1 SavedModel loader behind a
grpcio server on 127.0.0.1, in this process; TF Serving itself cannot be
installed here) serves the export's ``models.config``. A synthetic head CT of
230 x 230 x 150 voxels at 1 mm goes through ``synthesis.synthesize_volume``
with (the double's warmup replay is turned off; the timed runs follow a warm-up)

* ``local``: ``predictors.load_predictor`` (the SavedModel's ``normalised``
  signature in this process), and
* ``client``: ``client.connect`` over gRPC (same preprocessing code, ordered
  batches of 16 slices as PredictRequests, TF1 session on the server side).

One untimed warm-up of each path on 16 slices, then the full volume A B A B ...
(``--repeats`` pairs), interleaved so load from other jobs hits both alike. The
ratio client / local of the median wall (and process CPU) time is the overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from bench_inference import _head_ct, cpu_name  # noqa: E402


def _run(predictor, vol, batch_size: int) -> dict:
    from mrgan_tf.inference import synthesis

    w, c = time.perf_counter(), time.process_time()
    out, timing = synthesis.synthesize_volume(predictor, vol, batch_size=batch_size)
    return {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "model_s": timing["model_s"],
            "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="timed (local, client) pairs")
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--n_blocks", type=int, default=9)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    import keras
    import serving_double

    from mrgan_tf.inference import client, predictors
    from mrgan_tf.io.volumes import Volume
    from mrgan_tf.modeling import networks
    from mrgan_tf.preprocess import PreprocessConfig
    from mrgan_tf.serving import export
    from mrgan_tf.serving import files as serving_files

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_client_") as tmp:
        keras.utils.set_random_seed(0)
        gen = networks.build_generator(args.ngf, args.n_blocks, args.image_size, name="syn_mr")
        cfg = PreprocessConfig(image_size=args.image_size)
        export.export_generator(gen, "mr", cfg, tmp)
        serving_files.write_root_files(tmp, ["ct2mr"])
        vol = Volume(_head_ct((230, 230, args.slices)), np.eye(4), "synthetic")
        warm = Volume(vol.data[:, :, : args.batch_size], vol.affine, "synthetic")
        with serving_double.serving(os.path.join(tmp, serving_files.MODEL_CONFIG), replay_warmup=False) as srv:
            paths = {"local": predictors.load_predictor(tmp, "ct2mr"),
                     "client": client.connect(client.ClientConfig(srv.grpc_target, timeout_s=600.0), "ct2mr")}
            for p in paths.values():
                _run(p, warm, args.batch_size)
            runs = {name: [] for name in paths}
            for i in range(args.repeats):
                for name, p in paths.items():
                    r = _run(p, vol, args.batch_size)
                    runs[name].append(r)
                    print(f"pair {i + 1} {name:6s}: {r['wall_s']:7.1f} s wall, {r['cpu_s']:7.1f} s CPU", flush=True)
            max_diff = float(np.abs(runs["client"][-1]["out"].data - runs["local"][-1]["out"].data).max())
            requests = sum(1 for r in srv.grpc_calls if r.model_spec.signature_name == "normalised")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")} for n, rs in runs.items()}
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
              "args": vars(args), "median": med,
              "runs": {n: [{k: v for k, v in r.items() if k != "out"} for r in rs] for n, rs in runs.items()},
              "overhead_wall": med["client"]["wall_s"] / med["local"]["wall_s"] - 1.0,
              "overhead_cpu": med["client"]["cpu_s"] / med["local"]["cpu_s"] - 1.0,
              "max_abs_diff": max_diff, "normalised_requests": requests, "total_s": time.perf_counter() - t0}
    print(f"{args.slices} slices, ngf {args.ngf}, {args.n_blocks} blocks, {args.image_size}^2, batch {args.batch_size}:"
          f" local {med['local']['wall_s']:.1f} s, client {med['client']['wall_s']:.1f} s wall "
          f"(overhead {100 * result['overhead_wall']:+.1f} % wall, {100 * result['overhead_cpu']:+.1f} % CPU); "
          f"max |client - local| {max_diff:g}; {result['total_s']:.0f} s in all; CPU {result['cpu']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
