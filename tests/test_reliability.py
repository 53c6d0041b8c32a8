"""Nothing half-done survives a kill; user-caused failures are one line naming the path, never a traceback."""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_FLAGS, train_configs
from mrgan_tf.training.signals import EXIT_PREEMPTED
from tfrecords_tools import atomic

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def dead_pid() -> int:
    done = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def one_line_error(done, *words):
    """rc != 0, no traceback, and every word on the error line."""
    assert done.returncode not in (0, None), done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert all(w in done.stderr for w in words), (words, done.stderr[-2000:])


def limit_file_size(nbytes):
    """preexec_fn: writes past ``nbytes`` fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


# ------------------------------------------------------------------ the temporary rule

def test_temporary_names_and_stale_cleanup(tmp_path):
    mine = atomic.temporary_path(tmp_path / "syn.nii.gz", ".nii.gz")
    parsed = atomic.parse_temporary(mine)
    assert os.path.basename(mine).startswith(".tmp-syn.nii.gz-")
    assert parsed.pid == os.getpid() and parsed.final_name == "syn.nii.gz.nii.gz" and not parsed.aside
    gone = dead_pid()
    stale_file = tmp_path / f".tmp-syn.nii.gz-{gone}-0123abcd.nii.gz"
    stale_file.write_bytes(b"partial")
    stale_dir = tmp_path / f".tmp-3-{gone}-89abcdef"                 # an export version folder
    (stale_dir / "variables").mkdir(parents=True)
    legacy = tmp_path / f"records.tmp-{gone}"                         # earlier releases' make_records folder
    legacy.mkdir()
    aside = tmp_path / f".tmp-records-{gone}-00ff00ff.old"            # moved aside, replacement never came
    aside.mkdir()
    (aside / "dataset.json").write_text("{}")
    live = Path(mine)
    live.write_bytes(b"being written")
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert sorted(map(os.path.basename, removed)) == sorted([stale_file.name, stale_dir.name, legacy.name])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "records"])   # the old version is back
    assert (tmp_path / "records" / "dataset.json").exists()


def test_atomic_output_heals_the_folder_and_names_unwritable_paths(tmp_path):
    gone = dead_pid()
    (tmp_path / f".tmp-a.txt-{gone}-0123abcd").write_text("left by a kill")
    atomic.atomic_write_text(tmp_path / "a.txt", "done")
    assert os.listdir(tmp_path) == ["a.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(atomic.OutputError, match=r"file/sub: cannot be the output folder: .*file is a regular file"):
        atomic.atomic_write_text(tmp_path / "file" / "sub" / "b.txt", "x")
    script = ("import sys; from tfrecords_tools import atomic\n"
              "try:\n    atomic.atomic_write_bytes(sys.argv[1], b'x' * 100000)\n"
              "except atomic.OutputError as e:\n    print(e); sys.exit(1)\n")
    done = subprocess.run([PY, "-c", script, str(tmp_path / "big.bin")], capture_output=True, text=True, env=ENV,
                          preexec_fn=limit_file_size(20000), timeout=60)
    assert done.returncode == 1 and "big.bin: cannot write: File too large" in done.stdout, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "file"]          # no partial file


# ------------------------------------------------------------------ make_records

def small_root(root):
    from conftest import add_patient
    for i in range(3):
        add_patient(root, f"p{i}", seed=i)
    return root


def records_cmd(root, out, *extra):
    return [PY, "-m", "mrgan_tf.make_records", f"--root={root}", f"--out={out}", "--spacing_mm=2",
            "--image_size=64", "--test_patients=1", "--workers=1", "--examples_per_shard=4", *extra]


def test_atomic_folder_swaps_in_whole_or_leaves_the_old_one(tmp_path):
    out = tmp_path / "report"
    with atomic.atomic_folder(out) as tmp:
        (Path(tmp) / "a.txt").write_text("1")
    assert sorted(os.listdir(out)) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(out) as tmp:
            (Path(tmp) / "b.txt").write_text("2")
            raise RuntimeError("failed half-way")
    assert sorted(os.listdir(out)) == ["a.txt"] and os.listdir(tmp_path) == ["report"]


def test_make_records_killed_then_rerun_heals(tmp_path):
    """--out inside --root: a kill mid-write leaves a hidden temporary that the rerun removes."""
    root = small_root(tmp_path / "root")
    out = root / "records"
    proc = subprocess.Popen(records_cmd(root, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            temps = atomic.list_temporaries(root)
            if temps and any(p.name.startswith(".tmp-") and p.name.endswith(".tfrecord.gz")
                             for p in Path(temps[0].path).glob("*")):
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("make_records finished before the kill")
    assert not out.exists()
    assert [t.final_name for t in atomic.list_temporaries(root)] == ["records"]   # hidden, beside --out
    done = subprocess.run(records_cmd(root, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert atomic.list_temporaries(root) == [] and (out / "summary.json").exists()


def test_make_records_full_disk_is_one_line(tmp_path):
    root = small_root(tmp_path / "root")
    out = tmp_path / "out"
    done = subprocess.run(records_cmd(root, out, "--examples_per_shard=512"), env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_file_size(8192))
    one_line_error(done, str(out), "cannot write the records", "nothing was written")
    assert not out.exists() and atomic.list_temporaries(tmp_path) == []


# ------------------------------------------------------------------ train

def test_train_kills_in_checkpoint_and_export_then_rerun_completes(tiny_records, tmp_path):
    """Killed right after a checkpoint, then during the export, then SIGTERM in the export: the rerun
    exports a whole pair, history.csv has every iteration once, and checkpoint temporaries are gone."""
    import tensorflow as tf

    from mrgan_tf.serving import export
    from mrgan_tf.training import checkpoints, train
    out = tmp_path / "run"
    common = [f"--records={tiny_records.root}", f"--out={out}", "--mode=mrgan", "--steps=3",
              "--checkpoint_every=1", "--log_every=1", "--image_every=100", "--verbose=0", *TINY_FLAGS]
    killed = subprocess.run([PY, str(HERE / "killed_run.py"), "--kill_at=0", "--kill_after_checkpoint=2", *common],
                            capture_output=True, text=True, env=ENV, timeout=400)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    rows = [ln.split(",")[0] for ln in (out / "history.csv").read_text().splitlines()[1:]]
    assert rows == ["1", "2"]                               # the checkpoint's own row was on disk first
    killed = subprocess.run([PY, str(HERE / "killed_run.py"), "--kill_at=0", "--kill_in_export", *common],
                            capture_output=True, text=True, env=ENV, timeout=400)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert train.incomplete_exports(str(out / "export"), ("mr", "ct")) != []
    # Both directions are renamed into place only when both are written: serving saw no half pair.
    assert export.existing_versions(str(out / "export" / "ct2mr")) == []
    # SIGTERM during the export (a preemption after the last iteration): the export is abandoned, not waited for.
    termed = subprocess.run([PY, str(HERE / "killed_run.py"), "--kill_at=0", "--term_in_export", *common],
                            capture_output=True, text=True, env=ENV, timeout=400)
    assert termed.returncode == EXIT_PREEMPTED and "stopped by SIGTERM while finishing" in termed.stderr, \
        termed.stderr[-3000:]
    assert export.existing_versions(str(out / "export" / "ct2mr")) == []
    (out / "checkpoints" / "ckpt-4_temp").mkdir()           # what a kill inside a checkpoint write leaves
    (out / "checkpoints" / "ckpt-4_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 64)

    summary = train.train(str(tiny_records.root), str(out), *train_configs(common))
    assert summary["start_iteration"] == 3 and set(summary["export"]) == {"ct2mr", "mr2ct"}
    assert {os.path.basename(v) for v in summary["export"].values()} == {"1"}   # one number for the pair
    assert train.incomplete_exports(str(out / "export"), ("mr", "ct")) == []
    for name in ("ct2mr", "mr2ct"):
        assert "serving_default" in tf.saved_model.load(str(out / "export" / name / "1")).signatures
        assert [p for p in os.listdir(out / "export" / name) if p.startswith(".")] == []
    assert not (out / "checkpoints" / "ckpt-4_temp").exists()
    rows = [ln.split(",")[0] for ln in (out / "history.csv").read_text().splitlines()[1:]]
    assert rows == ["1", "2", "3"]
    assert export.existing_versions(str(out / "export" / "mr2ct")) == [1]
    assert checkpoints.remove_checkpoint_temporaries(str(out)) == []


def test_train_corrupt_shard_names_shard_and_record(tiny_records, tmp_path):
    from mrgan_tf.training import train
    from tfrecords_tools import reader
    records = tmp_path / "records"
    shutil.copytree(tiny_records.root, records)
    shard = reader.shard_files(records, reader.load_shard_set(records, "paired_train"))[0]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 3] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    out = tmp_path / "run"
    configs = train_configs([f"--records={records}", f"--out={out}", "--mode=paired", "--steps=2", "--verbose=0",
                             "--noexport", *TINY_FLAGS])
    with pytest.raises(train.CorruptRecordsError) as err:
        train.train(str(records), str(out), *configs)
    assert f"{shard} record " in str(err.value) and "tfrecords_tools.inspect" in str(err.value)


def test_train_startup_failures_write_nothing(tmp_path):
    from mrgan_tf.training import train
    from records_factory import write_tiny_records
    records = tmp_path / "records"
    write_tiny_records(str(records), size=32, per_set=4)
    os.remove(records / "unpaired_ct.shards.json")           # a missing unpaired set
    out = tmp_path / "run"
    configs = train_configs([f"--records={records}", f"--out={out}", "--mode=mrgan", "--steps=1", "--verbose=0",
                             *TINY_FLAGS])
    with pytest.raises(FileNotFoundError, match="unpaired_ct"):
        train.train(str(records), str(out), *configs)
    assert not out.exists()                                   # no run.json left behind


def test_train_cli_out_under_a_regular_file(tiny_records, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    done = subprocess.run([PY, "-m", "mrgan_tf.train", f"--records={tiny_records.root}", f"--out={blocker}/run",
                           "--steps=1", *TINY_FLAGS], capture_output=True, text=True, env=ENV, timeout=300)
    one_line_error(done, f"{blocker}/run", "is a regular file")


def test_malformed_run_json_names_the_file(tmp_path):
    from mrgan_tf.records.spec import SpecError
    from mrgan_tf.training import checkpoints
    (tmp_path / "run.json").write_text('{"model": {"mode": "mrgan", ')
    with pytest.raises(SpecError, match=r"run\.json: unreadable run config"):
        checkpoints.load_run_config(str(tmp_path))
    (tmp_path / "run.json").write_text('{"model": {"no_such_field": 1}, "records": "/r"}')
    with pytest.raises(SpecError, match=r"run\.json: bad model config"):
        checkpoints.restore_generators(str(tmp_path), checkpoint="unused")


def test_history_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    from mrgan_tf.training.callbacks import TrainingMonitor
    monitor = TrainingMonitor(str(tmp_path), write=True)
    (tmp_path / "history.csv").write_text("iteration,a,iterations_per_second\n1,0.5,2\n2,0.4,2\n3,0.3,2\n4,0.")
    monitor._drop_rows_after(2)
    assert (tmp_path / "history.csv").read_text() == "iteration,a,iterations_per_second\n1,0.5,2\n2,0.4,2\n"


def test_incomplete_exports(tmp_path):
    from mrgan_tf.training import train
    export_dir = tmp_path / "export"
    (export_dir / "ct2mr").mkdir(parents=True)
    assert train.incomplete_exports(str(export_dir), ("mr", "ct")) == ["ct2mr", "mr2ct"]
    version = export_dir / "ct2mr" / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\xff\xff not a proto")
    (version / "variables" / "variables.index").write_bytes(b"")
    assert train.incomplete_exports(str(export_dir), ("mr",)) == ["ct2mr"]
    from mrgan_tf.serving import export
    (export_dir / "mr2ct" / "1").mkdir(parents=True)
    (export_dir / "ct2mr" / "2").mkdir()   # an export killed between its two directions
    assert export.remove_orphan_versions(str(export_dir), ["ct2mr", "mr2ct"]) == [str(export_dir / "ct2mr" / "2")]
    assert export.existing_versions(str(export_dir / "ct2mr")) == export.existing_versions(str(export_dir / "mr2ct"))
    assert export.remove_orphan_versions(str(export_dir), ["ct2mr"]) == []   # one direction: nothing to pair


def test_train_full_disk_at_a_checkpoint_keeps_the_previous_one_and_the_rerun_continues(tiny_records, tmp_path):
    """A checkpoint that does not fit (EFBIG, as on a full disk): one line naming it, the previous
    checkpoint stays the latest and loads, and the rerun with space continues from it."""
    import tensorflow as tf
    out = tmp_path / "run"
    common = [f"--records={tiny_records.root}", f"--out={out}", "--mode=paired", "--checkpoint_every=2",
              "--noexport", "--verbose=0", "--image_every=1000", *TINY_FLAGS]
    first = subprocess.run([PY, "-m", "mrgan_tf.train", "--steps=2", *common], env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    data = max((out / "checkpoints").glob("ckpt-2.data-*"), key=lambda p: p.stat().st_size)
    full = subprocess.run([PY, "-m", "mrgan_tf.train", "--steps=4", *common], env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_file_size(data.stat().st_size // 2))
    one_line_error(full, "ckpt-4", "cannot write the checkpoint")
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert latest.endswith("ckpt-2") and tf.train.load_checkpoint(latest) is not None
    rerun = subprocess.run([PY, "-m", "mrgan_tf.train", "--steps=4", *common], env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-4")
