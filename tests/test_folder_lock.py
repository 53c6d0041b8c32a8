"""One writer per output folder: a second train / make_records / export into the same --out is refused
naming the holder; a dead holder's lock is taken over with a warning."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import TINY_FLAGS, train_configs

from tfrecords_tools import folder_lock as fl

HOLD = ("import sys, time; from tfrecords_tools.folder_lock import folder_lock\n"
        "with folder_lock(sys.argv[1], 'train'):\n"
        "    print('held', flush=True); sys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(fl.FolderBusy) as info:
        fl.acquire(tmp_path / "out", "export")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "out")) and f"pid {holder.pid} on {socket.gethostname()}" in message
    assert "in use by train" in message and "started 20" in message


def test_the_lock_is_gone_when_its_holder_ends_and_the_folder_is_free_again(tmp_path, holder):
    holder.stdin.close()
    holder.wait(timeout=30)
    assert not os.path.exists(fl.lock_path(tmp_path / "out"))
    with fl.folder_lock(tmp_path / "out", "train"):
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: str, **holder) -> None:
    with open(path, "w") as f:
        json.dump({"tool": "train", "host": socket.gethostname(), "pid": os.getpid(), "started": "then",
                   "started_epoch": time.time(), **holder}, f)


def test_a_dead_processes_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    path = fl.lock_path(tmp_path / "out")
    _write_lock(path, pid=_dead_pid())
    with fl.folder_lock(tmp_path / "out", "make_records"):
        assert fl.read_holder(path)["pid"] == os.getpid()
    assert "taking over the lock left by train" in caplog.text and "no longer running" in caplog.text
    assert not os.path.exists(path)


def test_another_hosts_lock_counts_until_it_is_not_refreshed(tmp_path):
    path = fl.lock_path(tmp_path / "out")
    _write_lock(path, host="gpu-node-7", pid=12345)
    with pytest.raises(fl.FolderBusy, match="pid 12345 on gpu-node-7"):
        fl.acquire(tmp_path / "out", "train")
    old = time.time() - fl.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    assert "not refreshed for 11 min" in fl.stale_reason(path, fl.read_holder(path))
    fl.release(fl.acquire(tmp_path / "out", "train"))


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    path = fl.lock_path(tmp_path / "out")
    _write_lock(path, pid=os.getpid() + 1)
    fl.release(path)
    assert os.path.exists(path)


def test_train_and_make_records_refuse_a_held_folder_before_any_work(tmp_path, holder, tiny_records):
    from mrgan_tf.records.make_records import make_records
    from mrgan_tf.training import train
    configs = train_configs([f"--records={tiny_records.root}", f"--out={tmp_path / 'out'}", "--steps=1",
                             "--verbose=0", *TINY_FLAGS])
    with pytest.raises(fl.FolderBusy, match=f"pid {holder.pid}"):
        train.train(tiny_records.root, str(tmp_path / "out"), *configs)
    assert not (tmp_path / "out").exists()
    with pytest.raises(fl.FolderBusy, match=f"pid {holder.pid}"):
        make_records(tmp_path / "root", tmp_path / "out", workers=0, progress=False)


def test_cli_refusal_is_one_line(tmp_path, holder, tiny_records):
    run = subprocess.run([sys.executable, "-m", "mrgan_tf.train", f"--records={tiny_records.root}",
                          f"--out={tmp_path / 'out'}", "--steps=1", *TINY_FLAGS], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("train:")]
    assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "in use by train" in lines[0]
