"""Benchmark: writing a synthesized volume in each output format, reading it back, sending it to a PACS.

A head-size volume (256 x 256 x 150, 1 mm, an ellipsoid head with texture) is
written as a synthetic CT (int16 HU) and a synthetic MR (float32 in files,
uint16 rescaled in DICOM) in every format, in interleaved rounds so the formats
share the machine's load alike; the median of the rounds is reported. With
``--send`` an Orthanc on 127.0.0.1 (Debian ``orthanc``) receives the DICOM
series by C-STORE, and so does a pynetdicom storage SCP in this process that
keeps nothing (the client's and the network's share of the time).

    .venv/bin/python bench/bench_outputs.py --rounds=3 [--send]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from scipy import ndimage

from mrgan_tf.io import pacs
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import output_name, write_volume

SHAPE = (256, 256, 150)
FORMATS = ("nifti", "mha", "nrrd", "dicom")

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds (the median is reported).", lower_bound=1)
_SEND = flags.DEFINE_bool("send", False, "Also C-STORE the DICOM series to an Orthanc started on 127.0.0.1.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")


def head(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(CT in HU, MR on 0-255) of an ellipsoid head: air, skull rim, smooth soft-tissue texture."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    r = np.sqrt(grid[0] ** 2 + grid[1] ** 2 + (grid[2] * 0.8) ** 2)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE).astype(np.float32), 3) * 40
    ct = np.where(r < 0.85, 35.0 + texture, -1000.0) + np.where((r > 0.75) & (r < 0.85), 1100.0, 0.0)
    mr = np.clip(np.where(r < 0.75, 120.0 + texture, np.where(r < 0.85, 20.0, 0.0)), 0, 255)
    return ct.astype(np.float32), mr.astype(np.float32)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else list(path.iterdir())
    return sum(f.stat().st_size for f in files) / 1e6


def main(argv):
    del argv
    ct, mr = head(np.random.default_rng(0))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    volumes = {"CT": Volume(ct, affine, "bench_ct"), "MR": Volume(mr, affine, "bench_mr")}
    times: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}
    peers, orthanc, sink = {}, None, None
    if _SEND.value:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from orthanc_server import Orthanc, free_port
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        orthanc = Orthanc(tempfile.mkdtemp(prefix="bench-orthanc-"))
        ae = AE("SINK")
        ae.supported_contexts = AllStoragePresentationContexts
        port = free_port()
        sink = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)])
        peers = {"C-STORE Orthanc": pacs.parse_peer(orthanc.peer), "C-STORE sink": pacs.Peer("SINK", "127.0.0.1", port)}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-outputs-") as tmp:
            for r in range(_ROUNDS.value):
                for modality, vol in volumes.items():
                    for fmt in FORMATS:
                        out = Path(tmp) / f"r{r}" / output_name(f"syn_{modality.lower()}", fmt)
                        key = f"{modality} {fmt}"
                        t_write, _ = _timed(lambda: write_volume(vol, out, fmt, modality))
                        t_read, _ = _timed(lambda: read_volume(out))
                        times.setdefault(f"{key} write", []).append(t_write)
                        times.setdefault(f"{key} read", []).append(t_read)
                        sizes[key] = _size_mb(out)
                        for what, peer in (peers.items() if fmt == "dicom" else ()):
                            t_send, _ = _timed(lambda: pacs.store_series(out, peer))
                            times.setdefault(f"{key} {what}", []).append(t_send)
    finally:
        if sink is not None:
            sink.shutdown()
        if orthanc is not None:
            orthanc.stop()
    results = {k: statistics.median(v) for k, v in times.items()}
    print(f"volume {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]}, median of {_ROUNDS.value} interleaved rounds")
    print(f"{'output':<30}{'seconds':>9}{'MB':>9}")
    for k, v in results.items():
        fmt_key = " ".join(k.split()[:2])
        print(f"{k:<30}{v:9.2f}{sizes.get(fmt_key, 0):9.1f}")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"shape": SHAPE, "rounds": _ROUNDS.value, "seconds": results, "megabytes": sizes}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
