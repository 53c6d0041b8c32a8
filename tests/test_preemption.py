"""StopOnSignal's three phases, in-process (the end-to-end SIGTERM runs are in test_distribute)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mrgan_tf.training.preemption import EXIT_PREEMPTED, Preempted, StopOnSignal


def test_a_signal_while_the_run_starts_ends_it_at_once_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    stopper = StopOnSignal().arm()
    try:
        with pytest.raises(Preempted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert info.value.signal_name == "SIGTERM"
    finally:
        stopper.restore()
    assert signal.getsignal(signal.SIGTERM) is before


class _Model:
    stop_training = False


def test_a_signal_during_training_asks_fit_to_stop_and_one_after_it_abandons_the_export(capsys):
    stopper = StopOnSignal().arm()
    try:
        stopper.set_model(_Model())
        stopper.on_train_begin()
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.signal_name == "SIGINT" and stopper.model.stop_training
        assert "stopping after this iteration and saving it" in capsys.readouterr().out
        finishing = StopOnSignal().arm()
        try:
            finishing.on_train_end()
            with pytest.raises(Preempted) as info:
                os.kill(os.getpid(), signal.SIGTERM)
            assert info.value.signal_name == "SIGTERM" and info.value.during == "finishing"
        finally:
            finishing.restore()
    finally:
        stopper.restore()


def test_a_signal_while_tensorflow_loads_exits_with_the_preempted_status():
    """``python -m mrgan_tf.train`` installs this before importing the trainer (test_layout checks the order)."""
    code = ("import os, signal, time\n"
            "from mrgan_tf.training.signals import exit_until_armed\n"
            "exit_until_armed('train')\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_PREEMPTED, done.stderr
    assert "train: stopped by SIGTERM while starting (nothing to save yet)" in done.stderr
