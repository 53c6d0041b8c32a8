"""This project against its PyTorch peer (bench/torch_peer.py), interleaved A B A B in one run.

Every side is a warm worker process (built, first step and warm-up done before
any timing); the driver then asks the sides in turn for one timed iteration,
round after round, so that load from other jobs on a shared machine falls on
all sides alike. It prints s/iteration per side, the ratios peer / project,
``lscpu``'s model and SIMD flags, the thread counts, and checks that both
sides run the same convolutions (forward conv FLOPs per network, bench/flops.py
against hooks on the torch modules).

Side specs: ``tf`` or ``tf:bf16`` (mixed_bfloat16) [``:noaug``]; ``torch``
[``:channels_last``] [``:nomkldnn``] [``:bf16``] [``:fused`` | ``:for_loop``]
[``:denormal`` (keep denormals; the peer flushes them, as TensorFlow does)].

    .venv/bin/python bench/bench_peer.py --size full --rounds 3 --sides tf,torch
    .venv/bin/python bench/bench_peer.py --size full --rounds 2 --sides torch,torch:channels_last,torch:fused
    .venv/bin/python bench/bench_peer.py --size demo --rounds 3 --sides tf,torch --json /tmp/peer.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)


def lscpu() -> dict:
    """Model name and the SIMD flags that decide conv speed (AVX2, AVX-512, BF16, AMX)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model": "unknown (lscpu failed)", "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("f16c",)]
    return {"model": fields.get("Model name", "?").strip(), "family": fields.get("CPU family", "?").strip(),
            "model_id": fields.get("Model", "?").strip(), "cpus": fields.get("CPU(s)", "?").strip(),
            "flags": wanted, "bf16": "avx512_bf16" in flags or "amx_bf16" in flags}


# ---------------------------------------------------------------- workers
def _parse_side(spec: str) -> tuple[str, set]:
    impl, *opts = spec.split(":")
    if impl not in ("tf", "torch"):
        raise ValueError(f"side {spec!r}: starts with tf or torch")
    allowed = {"tf": {"bf16", "noaug"},
               "torch": {"channels_last", "nomkldnn", "bf16", "fused", "for_loop", "denormal"}}[impl]
    bad = set(opts) - allowed
    if bad:
        raise ValueError(f"side {spec!r}: unknown options {sorted(bad)}; {impl} takes {sorted(allowed)}")
    return impl, set(opts)


class TFSide:
    def __init__(self, size: str, opts: set, threads: int):
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        from bench_train import _batch, build_model
        from flops import iteration_flops
        self.model = build_model(size, "mixed_bfloat16" if "bf16" in opts else "float32", False,
                                 augment="noaug" not in opts)
        self.it = iter(tf.data.Dataset.from_tensors(_batch(self.model.config.image_size)).repeat())
        self.model.make_train_function()
        f = iteration_flops(self.model)
        self.info = {"threads_intra_op": threads, "gflop_per_iter": f["total"] / 1e9,
                     "generator_forward": f["generator_forward"], "discriminator_forward": f["discriminator_forward"]}

    def step(self):
        out = self.model.train_function(self.it)
        out = out.get_value() if hasattr(out, "get_value") else out
        return float(out["paired/syn_mr_l1"].numpy())


class TorchSide:
    def __init__(self, size: str, opts: set, threads: int):
        import torch

        from bench_train import SIZES
        from torch_peer import Peer, PeerSettings, peer_flops
        torch.set_num_threads(threads)
        s = SIZES[size]
        adam = "fused" if "fused" in opts else "for_loop" if "for_loop" in opts else "foreach"
        settings = PeerSettings(channels_last="channels_last" in opts, mkldnn="nomkldnn" not in opts,
                                bf16="bf16" in opts, adam=adam, flush_denormal="denormal" not in opts)
        self.peer = Peer(s["ngf"], s["n_blocks"], s["ndf_scale"], settings)
        gen = torch.Generator().manual_seed(0)
        self.batch = torch.rand(1, 4, s["image_size"], s["image_size"], generator=gen) * 2 - 1
        f = peer_flops(self.peer, s["image_size"])
        self.info = {"threads": torch.get_num_threads(), "settings": dataclasses.asdict(settings),
                     "torch": torch.__version__, "mkldnn_available": torch.backends.mkldnn.is_available(), **f}

    def step(self):
        return self.peer.iteration(self.batch)["paired/syn_mr"]


def worker(spec: str, size: str, warmup: int, threads: int) -> int:
    """Builds one side, reports first-step and warm-up times, then times one iteration per 'run' line."""
    impl, opts = _parse_side(spec)
    t = time.perf_counter()
    side = (TFSide if impl == "tf" else TorchSide)(size, opts, threads)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    side.step()
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(warmup):
        side.step()
    warm_s = (time.perf_counter() - t) / max(warmup, 1)
    _send({"ready": True, "build_s": build_s, "first_step_s": first_s, "warmup_s_per_iter": warm_s, **side.info})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        w, c = time.perf_counter(), time.process_time()
        loss = side.step()
        _send({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "loss": loss})
    return 0


def _send(obj):
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _receive(proc, spec: str) -> dict:
    for line in proc.stdout:
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"side {spec!r} exited (code {proc.wait()}) before answering; see its stderr above")


# ---------------------------------------------------------------- driver
def same_flops(infos: dict) -> dict:
    """Forward conv FLOPs per network of every side against the first tf side (relative difference)."""
    ref = next((i for s, i in infos.items() if s.startswith("tf")), None)
    if ref is None:
        return {}
    out = {}
    for spec, info in infos.items():
        if spec.startswith("torch"):
            pairs = [(ref["generator_forward"], info["generator_forward"])]
            pairs += [(ref["discriminator_forward"][k], info["discriminator_forward"][k])
                      for k in ("unpaired", "paired")]
            out[spec] = max(abs(a - b) / a for a, b in pairs)
    return out


def compare(sides: list[str], size: str, rounds: int, warmup: int, threads: int) -> dict:
    for s in sides:
        _parse_side(s)
    procs, infos = {}, {}
    try:
        for spec in sides:        # started one at a time, so no side's tracing overlaps another's timing
            print(f"starting {spec} ({size})", flush=True)
            procs[spec] = subprocess.Popen(
                [sys.executable, __file__, "worker", spec, "--size", size, "--warmup", str(warmup),
                 "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            infos[spec] = _receive(procs[spec], spec)
            print(f"  {spec}: first step {infos[spec]['first_step_s']:.1f} s, warm-up "
                  f"{infos[spec]['warmup_s_per_iter']:.2f} s/iteration", flush=True)
        times = {s: [] for s in sides}
        for r in range(rounds):
            for spec in sides:
                procs[spec].stdin.write("run\n")
                procs[spec].stdin.flush()
                times[spec].append(_receive(procs[spec], spec))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{s} {times[s][-1]['wall_s']:.2f} s" for s in sides),
                  flush=True)
    finally:
        for spec, p in procs.items():
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:      # its times are in: a slow exit must not lose them
                    print(f"  {spec}: still exiting after 60 s, killed", flush=True)
                    p.kill()
                    p.wait()
    med = {s: statistics.median(t["wall_s"] for t in times[s]) for s in sides}
    best = {s: min(t["wall_s"] for t in times[s]) for s in sides}
    ratios, ratios_best = {}, {}
    for peer in (s for s in sides if s.startswith("torch")):
        for proj in (s for s in sides if s.startswith("tf")):
            if ("bf16" in peer) == ("bf16" in proj):
                ratios[f"{peer} / {proj}"] = med[peer] / med[proj]
                ratios_best[f"{peer} / {proj}"] = best[peer] / best[proj]
    return {"size": size, "rounds": rounds, "cpu": lscpu(), "loadavg_end": os.getloadavg(),
            "sides": {s: {**infos[s], "s_per_iter": [t["wall_s"] for t in times[s]],
                          "cpu_s_per_iter": [t["cpu_s"] for t in times[s]], "median_s": med[s]} for s in sides},
            "ratios_peer_over_project": ratios, "ratios_best_over_best": ratios_best,
            "flops_max_rel_diff": same_flops(infos)}


def report(res: dict) -> str:
    cpu = res["cpu"]
    lines = [f"CPU: {cpu['model']} (family {cpu['family']} model {cpu['model_id']}, {cpu['cpus']} CPUs), "
             f"BF16 {'yes' if cpu['bf16'] else 'no'}; flags: {' '.join(cpu['flags'])}",
             f"size {res['size']}, {res['rounds']} interleaved rounds"]
    for s, r in res["sides"].items():
        th = r.get("threads", r.get("threads_intra_op"))
        lines.append(f"  {s:32s} median {r['median_s']:.3f} s/iteration  all "
                     + " ".join(f"{t:.2f}" for t in r["s_per_iter"])
                     + f"  first step {r['first_step_s']:.1f} s  threads {th}")
    for k, v in res["ratios_peer_over_project"].items():
        lines.append(f"  ratio {k}: {v:.3f} of medians, {res['ratios_best_over_best'][k]:.3f} of the best "
                     "iterations (>1: the project is faster)")
    for k, v in res["flops_max_rel_diff"].items():
        lines.append(f"  same conv FLOPs as the project: {k} max relative difference {v:.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="compare", choices=["compare", "worker"])
    p.add_argument("spec", nargs="?", help="(worker) its side spec")
    p.add_argument("--sides", default="tf,torch", help="comma-separated side specs")
    p.add_argument("--size", choices=["full", "demo"], default="full")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    if a.mode == "worker":
        return worker(a.spec, a.size, a.warmup, a.threads)
    try:
        res = compare(a.sides.split(","), a.size, a.rounds, a.warmup, a.threads)
    except (ValueError, RuntimeError) as e:
        print(f"bench_peer: {e}", file=sys.stderr)
        return 2
    print(report(res))
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
