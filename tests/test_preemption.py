"""StopOnSignal's three phases, in-process (the end-to-end SIGTERM runs are in test_distribute)."""
from __future__ import annotations

import os
import signal

import pytest

from mrgan_tf.training.preemption import Preempted, StopOnSignal


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


def test_a_signal_during_training_asks_fit_to_stop_and_one_after_it_only_notes_it(capsys):
    stopper = StopOnSignal().arm()
    try:
        stopper.set_model(_Model())
        stopper.on_train_begin()
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.signal_name == "SIGINT" and stopper.model.stop_training
        assert "stopping after this iteration and saving it" in capsys.readouterr().out
        finishing = StopOnSignal().arm()
        finishing.on_train_end()
        os.kill(os.getpid(), signal.SIGTERM)
        assert finishing.signal_name == "SIGTERM" and "finishing what the run writes" in capsys.readouterr().out
        finishing.restore()
    finally:
        stopper.restore()
