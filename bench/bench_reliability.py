"""Benchmark: kill -9 trials. Does every output stay complete or absent, and does the next run heal?

Each trial starts a tool as a subprocess in its own process group, SIGKILLs the whole
group at a seeded random moment (a fraction of an uninterrupted run's wall time),
checks what is on disk, runs the same command again and checks again:

- make_records (``--out`` inside ``--root``, every other trial over an earlier output with
  ``--overwrite``): after the kill ``--out`` is absent or complete (every shard set verifies);
  the rerun succeeds and leaves no temporaries.
- train including its export (tiny MR-GAN, ``--deterministic``): after the kill every exported
  version is a whole SavedModel; the rerun ends with a complete export of both directions under
  one version number, no temporaries, every history row once, and weights, optimizer state and
  counters equal to an uninterrupted run's.
- export (``python -m mrgan_tf.export`` on a finished run): every version is whole after the
  kill; after the rerun the newest ct2mr and mr2ct versions are a pair, with no temporaries.
- synthesize: the output NIfTI is absent or complete after the kill; the rerun leaves no temporaries.

- preempt: SIGTERM (what a preempted VM or a scheduler's time limit sends) at a seeded random moment
  of training (tracing, iterations, checkpoints, the export at the end): the run exits 75 (stopped,
  saved) or 0 (it had finished) within 30 s of the signal; the rerun resumes to weights bit-identical
  to an uninterrupted run's, every history row once, no leftovers.
- concurrent: two trainings started into one ``--out`` at the same moment: one finishes, the other
  is refused naming the holder; the finished run's weights are an uninterrupted run's.
- stop_time: SIGTERM at a random moment of an iteration of the demo's (configs/demo.cfg, 128 px) and
  the paper's (configs/mrgan.cfg, 256 px) model: the seconds to the exit, against one iteration's.

    .venv/bin/python bench/bench_reliability.py --kill_seed=0 \
        [--make_records_trials=20 --train_trials=10 --export_trials=10 --synthesize_trials=10 \
         --preempt_trials=10 --concurrent_trials=3 --stop_time_trials=3 --stop_sizes=demo,full]
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))   # the test suite's small data builders, reused

_WORK = flags.DEFINE_string("work", os.path.join(tempfile.gettempdir(), "mrgan_bench_reliability"),
                            "Scratch folder (emptied first).")
_SEED = flags.DEFINE_integer("kill_seed", 0, "Seed of the kill times.")
_N = {name: flags.DEFINE_integer(f"{name}_trials", n, f"{name} trials.")
      for name, n in (("make_records", 20), ("train", 10), ("export", 10), ("synthesize", 10), ("preempt", 10),
                      ("concurrent", 3), ("stop_time", 0))}
_STOP_SIZES = flags.DEFINE_list("stop_sizes", ["demo", "full"], "Model sizes of the stop_time trials: demo, full.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
TRAIN_STEPS = 6


def run(cmd, timeout=900) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    return done.returncode, time.perf_counter() - t0, done.stderr


def run_and_signal(cmd, after_s: float, sig=signal.SIGTERM, group: bool = False) -> tuple[int, float | None]:
    """Start ``cmd``; send ``sig`` to it after ``after_s`` unless it ended; (returncode, seconds from the
    signal to the exit, None when it ended first). ``group``: it runs in a process group of its own, the
    signal goes to the whole group, and no process of the group outlives it (spawned workers)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=group)
    stop_s = None
    try:
        proc.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        t = time.perf_counter()
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        proc.wait(timeout=900)
        stop_s = time.perf_counter() - t
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stop_s


def run_and_kill(cmd, after_s: float) -> bool:
    """Start ``cmd`` in a new process group; SIGKILL the group after ``after_s``. True if it was killed."""
    return run_and_signal(cmd, after_s, signal.SIGKILL, group=True)[1] is not None


# --------------------------------------------------------------------------- checks


def leftovers(*folders) -> list[str]:
    from tfrecords_tools import atomic
    found = []
    for folder in folders:
        for dirpath, dirnames, _ in os.walk(folder):
            found += [t.path for t in atomic.list_temporaries(dirpath)]
            found += [os.path.join(dirpath, d) for d in dirnames if d.endswith("_temp")]
    return found


def records_complete(out: Path) -> bool:
    from mrgan_tf.records.spec import DatasetSpec
    from tfrecords_tools import reader
    try:
        spec = DatasetSpec.load(out)
        return all(reader.verify(out, name).ok for name in spec.sets)
    except Exception:
        return False


def versions_whole(export_dir: Path) -> bool:
    """Every numbered version folder is a SavedModel that parses."""
    from tensorflow.core.protobuf import saved_model_pb2
    for version in export_dir.glob("*/[0-9]*"):
        try:
            saved_model_pb2.SavedModel().ParseFromString((version / "saved_model.pb").read_bytes())
        except Exception:
            return False
        if not (version / "variables" / "variables.index").is_file():
            return False
    return True


def newest_pair(export_dir: Path) -> bool:
    from mrgan_tf.serving import export
    newest = [export.existing_versions(str(export_dir / n))[-1:] for n in ("ct2mr", "mr2ct")]
    return all(newest) and newest[0] == newest[1]


def nifti_complete(path: Path, shape) -> bool:
    from mrgan_tf.io.readers import read_volume
    try:
        return read_volume(path).shape == tuple(shape)
    except Exception:
        return False


def tensors(run_dir: Path) -> dict:
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in skip}


def history_once(run_dir: Path, n: int) -> bool:
    try:
        rows = [ln.split(",")[0] for ln in (run_dir / "history.csv").read_text().splitlines()[1:]]
    except OSError:
        return False
    return rows == [str(i) for i in range(1, n + 1)]


# --------------------------------------------------------------------------- trials


class Table:
    def __init__(self):
        self.rows = collections.OrderedDict()

    def add(self, tool: str, check: str, ok: bool):
        key = (tool, check)
        survived, total = self.rows.get(key, (0, 0))
        self.rows[key] = (survived + bool(ok), total + 1)
        print(f"  {tool} trial {total + 1}: {check}: {'ok' if ok else 'FAILED'}", flush=True)

    def text(self) -> str:
        lines = [f"{'tool':<13} {'check':<58} survived/total"]
        lines += [f"{tool:<13} {check:<58} {s}/{t}" for (tool, check), (s, t) in self.rows.items()]
        return "\n".join(lines)


def make_records_trials(work: Path, n: int, rng, table: Table):
    from conftest import add_patient
    root = work / "mr_root"
    for i in range(4):
        add_patient(root, f"p{i}", seed=i)
    out = root / "records"   # inside --root: a visible leftover would be read as a patient
    cmd = [PY, "-m", "mrgan_tf.make_records", f"--root={root}", f"--out={out}", "--spacing_mm=2", "--image_size=64",
           "--test_patients=1", "--workers=2", "--examples_per_shard=8", "--overwrite"]
    rc, ref_s, err = run(cmd)
    assert rc == 0, err[-2000:]
    killed = 0
    for i in range(n):
        if i % 2 == 0:
            shutil.rmtree(out, ignore_errors=True)   # even trials: no earlier output
        killed += run_and_kill(cmd, rng.uniform(0.05, 1.0) * ref_s)
        table.add("make_records", "after kill: --out absent or complete", not out.exists() or records_complete(out))
        if i % 2:
            table.add("make_records", "after kill: the earlier output still there", out.exists())
        rc, _, err = run(cmd)
        table.add("make_records", "rerun succeeds", rc == 0)
        table.add("make_records", "after rerun: complete, no leftovers", records_complete(out) and not leftovers(root))
    return {"reference_s": round(ref_s, 1), "killed": killed}


def train_cmd(records, out):
    from conftest import TINY_FLAGS
    return [PY, "-m", "mrgan_tf.train", f"--records={records}", f"--out={out}", "--mode=mrgan",
            f"--steps={TRAIN_STEPS}", "--checkpoint_every=2", "--log_every=1", "--image_every=100", "--verbose=0",
            "--deterministic", *TINY_FLAGS]


def train_reference(work: Path) -> tuple[Path, Path, float]:
    """The tiny records and an uninterrupted run on them (made once): (records, run, its wall seconds)."""
    from records_factory import write_tiny_records
    records, reference, seconds = work / "train_records", work / "train_reference", work / "train_reference_s.json"
    if not seconds.exists():
        write_tiny_records(str(records), size=32)
        rc, ref_s, err = run(train_cmd(records, reference))
        assert rc == 0, err[-2000:]
        seconds.write_text(json.dumps(ref_s))
    return records, reference, json.loads(seconds.read_text())


def train_trials(work: Path, n: int, rng, table: Table):
    from mrgan_tf.training import train
    records, reference, ref_s = train_reference(work)
    expected = tensors(reference)
    killed, worst = 0, 0.0
    for i in range(n):
        out = work / f"train_{i}"
        killed += run_and_kill(train_cmd(records, out), rng.uniform(0.05, 1.0) * ref_s)
        table.add("train", "after kill: every exported version whole", versions_whole(out / "export"))
        rc, _, err = run(train_cmd(records, out))
        table.add("train", "rerun succeeds", rc == 0)
        complete = rc == 0 and not train.incomplete_exports(str(out / "export"), ("mr", "ct"))
        table.add("train", "after rerun: export complete, newest versions a pair",
                  complete and newest_pair(out / "export"))
        table.add("train", "after rerun: no leftovers", not leftovers(out))
        table.add("train", "after rerun: every history row once", history_once(out, TRAIN_STEPS))
        got = tensors(out) if rc == 0 else {}
        same = got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
        if got.keys() == expected.keys():
            worst = max(worst, max(float(np.max(np.abs(got[k].astype(np.float64) - expected[k])))
                                   for k in expected if np.issubdtype(expected[k].dtype, np.number)))
        table.add("train", f"after rerun: {len(expected)} tensors bit-identical", same)
    return {"reference_s": round(ref_s, 1), "killed": killed, "tensors": len(expected), "max_abs_diff": worst}


def export_trials(work: Path, n: int, rng, table: Table):
    run_dir = work / "train_reference"
    export_dir = work / "export_trials"
    cmd = [PY, "-m", "mrgan_tf.export", f"--run={run_dir}", f"--export_dir={export_dir}"]
    rc, ref_s, err = run(cmd)
    assert rc == 0, err[-2000:]
    killed = 0
    for _ in range(n):
        killed += run_and_kill(cmd, rng.uniform(0.05, 1.0) * ref_s)
        table.add("export", "after kill: every version whole", versions_whole(export_dir))
        rc, _, err = run(cmd)
        table.add("export", "rerun succeeds", rc == 0)
        table.add("export", "after rerun: newest ct2mr and mr2ct versions a pair", newest_pair(export_dir))
        table.add("export", "after rerun: no leftovers", not leftovers(export_dir))
    return {"reference_s": round(ref_s, 1), "killed": killed}


def synthesize_trials(work: Path, n: int, rng, table: Table):
    from conftest import head_pair

    from mrgan_tf.io.writers import write_nifti
    ct, _ = head_pair()
    src = work / "syn_in" / "ct.nii.gz"
    src.parent.mkdir(parents=True)
    write_nifti(ct, src)
    out = work / "syn_out" / "syn_mr.nii.gz"
    cmd = [PY, "-m", "mrgan_tf.synthesize", f"--model={work / 'train_reference' / 'export'}", f"--ct={src}",
           f"--out={out}", "--noprogress"]
    rc, ref_s, err = run(cmd)
    assert rc == 0, err[-2000:]
    killed = 0
    for i in range(n):
        if i % 2 == 0:
            out.unlink(missing_ok=True)
        killed += run_and_kill(cmd, rng.uniform(0.05, 1.0) * ref_s)
        table.add("synthesize", "after kill: output absent or complete",
                  not out.exists() or nifti_complete(out, ct.shape))
        rc, _, err = run(cmd)
        table.add("synthesize", "rerun succeeds", rc == 0)
        table.add("synthesize", "after rerun: complete, no leftovers",
                  nifti_complete(out, ct.shape) and not leftovers(out.parent))
    return {"reference_s": round(ref_s, 1), "killed": killed}


def _same_as(expected: dict, out: Path) -> bool:
    got = tensors(out)
    return got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)


def preempt_trials(work: Path, n: int, rng, table: Table):
    """SIGTERM at a random moment (tracing, training, checkpoint, export): stops in time, resumes exactly."""
    from mrgan_tf.training.preemption import EXIT_PREEMPTED
    records, reference, ref_s = train_reference(work)
    expected = tensors(reference)
    stops, codes = [], collections.Counter()
    for i in range(n):
        out = work / f"preempt_{i}"
        after = rng.uniform(0.05, 1.0) * ref_s
        rc, stop_s = run_and_signal(train_cmd(records, out), after)
        codes[f"{rc} (signal at {after:.1f} s)" if rc not in (EXIT_PREEMPTED, 0) else rc] += 1
        if stop_s is not None:
            stops.append(stop_s)
        table.add("preempt", "exit: 75 (stopped, saved) or 0 (had finished)", rc in (EXIT_PREEMPTED, 0))
        table.add("preempt", "stopped within 30 s of the signal", stop_s is None or stop_s <= 30.0)
        rc, _, err = run(train_cmd(records, out))
        table.add("preempt", "rerun succeeds", rc == 0)
        table.add("preempt", "after rerun: no leftovers", not leftovers(out))
        table.add("preempt", "after rerun: every history row once", history_once(out, TRAIN_STEPS))
        table.add("preempt", f"after rerun: {len(expected)} tensors bit-identical", rc == 0 and _same_as(expected, out))
    return {"exit_codes": dict(codes), "signalled": len(stops), "stop_s_max": round(max(stops), 2) if stops else None,
            "stop_s_median": round(float(np.median(stops)), 2) if stops else None}


STOP_SIZES = {"demo": (128, "configs/demo.cfg"), "full": (256, "configs/mrgan.cfg")}


def stop_time_trials(work: Path, n: int, rng, table: Table):
    """SIGTERM mid-iteration at the demo's and the paper's model size: the seconds to the exit (the rest
    of the iteration plus one checkpoint write) against one iteration's seconds."""
    import tensorflow as tf
    from records_factory import write_tiny_records

    from mrgan_tf.training.preemption import EXIT_PREEMPTED
    result = {}
    for size in _STOP_SIZES.value:
        pixels, flagfile = STOP_SIZES[size]
        records = work / f"stop_records_{pixels}"
        if not records.exists():
            write_tiny_records(str(records), size=pixels)
        stops, iterations, saved = [], [], 0
        for i in range(n):
            out = work / f"stop_{size}_{i}"
            cmd = [PY, "-m", "mrgan_tf.train", f"--flagfile={REPO / flagfile}", f"--records={records}",
                   f"--out={out}", "--steps=100000", "--checkpoint_every=100000", "--image_every=100000",
                   "--val_every=0", "--noexport", "--verbose=1", "--progress_every=1"]
            proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            times = []
            for line in proc.stdout:   # "iteration N/..." once per iteration; the first includes tracing
                if line.startswith("iteration "):
                    times.append(time.perf_counter())
                    if len(times) == 3:
                        break
            iteration_s = times[2] - times[1]
            time.sleep(rng.uniform(0.0, 1.0) * iteration_s)   # somewhere inside the fourth iteration
            t = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=900)
            stop_s = time.perf_counter() - t
            stops.append(stop_s)
            iterations.append(iteration_s)
            ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
            saved += ckpt is not None
            table.add(f"stop {size}", "exit 75 with the iteration saved", proc.returncode == EXIT_PREEMPTED
                      and ckpt is not None)
            table.add(f"stop {size}", "stopped within 30 s of the signal", stop_s <= 30.0)
            shutil.rmtree(out, ignore_errors=True)
        result[size] = {"iteration_s_median": round(float(np.median(iterations)), 2),
                        "stop_s_median": round(float(np.median(stops)), 2), "stop_s_max": round(max(stops), 2),
                        "saved": saved}
    return result


def concurrent_trials(work: Path, n: int, rng, table: Table):
    """Two trainings started into one --out at once: one refused at once naming the other, one writer."""
    records, reference, _ = train_reference(work)
    expected = tensors(reference)
    refusals = []
    for i in range(n):
        out = work / f"concurrent_{i}"
        procs = [subprocess.Popen(train_cmd(records, out), env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        t0 = time.perf_counter()
        results = []
        for p in procs:
            err = p.communicate(timeout=900)[1]
            results.append((p.returncode, err, time.perf_counter() - t0))
        codes = sorted(rc for rc, _, _ in results)
        refused = [(err, s) for rc, err, s in results if rc == 1]
        table.add("concurrent", "one finishes, one refused", codes == [0, 1])
        table.add("concurrent", "the refusal names the holder",
                  bool(refused) and "in use by train (pid" in refused[0][0])
        if refused:
            refusals.append(refused[0][1])
        table.add("concurrent", f"the finished run: {len(expected)} tensors bit-identical", _same_as(expected, out))
        table.add("concurrent", "no leftovers", not leftovers(out))
    return {"refused_after_s_max": round(max(refusals), 1) if refusals else None}


def main(argv):
    del argv
    work = Path(_WORK.value)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(_SEED.value)
    table, info = Table(), {}
    t0 = time.perf_counter()
    for name, trials in (("make_records", make_records_trials), ("train", train_trials),
                         ("export", export_trials), ("synthesize", synthesize_trials),
                         ("preempt", preempt_trials), ("concurrent", concurrent_trials),
                         ("stop_time", stop_time_trials)):
        if _N[name].value:
            t = time.perf_counter()
            info[name] = trials(work, _N[name].value, rng, table)
            info[name]["trials"], info[name]["seconds"] = _N[name].value, round(time.perf_counter() - t, 1)
            print(f"{name}: {info[name]}", flush=True)
    print(table.text())
    print(f"total {time.perf_counter() - t0:.0f} s")
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps({"info": info, "table": [list(k) + list(v) for k, v in
                                                                         table.rows.items()]}, indent=1))


if __name__ == "__main__":
    app.run(main)
