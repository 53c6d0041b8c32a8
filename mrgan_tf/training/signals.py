"""The signals that stop a job, and what a run does with one before it can save anything.

A preempted VM or a scheduler's time limit sends SIGTERM; a person presses Ctrl-C.
Loading TensorFlow takes seconds, and a signal in those seconds would end the process
by the signal's default action (status -15): ``exit_until_armed`` answers it the way
``preemption.StopOnSignal`` answers one while the run starts: one line, nothing was
written yet, status ``EXIT_PREEMPTED``. It imports nothing heavy, so the command-line
module can install it before importing the trainer; ``StopOnSignal`` replaces it once
the run begins.
"""
from __future__ import annotations

import os
import signal
import sys

from tfrecords_tools import console

EXIT_PREEMPTED = 75     # EX_TEMPFAIL: stopped by a signal, resumable; schedulers may requeue on it
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_until_armed(tool: str) -> None:
    """Until a run installs its own handlers: a SIGTERM or SIGINT ends the process with ``EXIT_PREEMPTED``."""
    def handle(signum, frame):
        line = (f"{tool}: stopped by {signal.Signals(signum).name} while starting (nothing to save yet); run the "
                "same command again to resume\n")
        sys.stderr.flush()
        os.write(console.stderr_fd(), line.encode())   # TensorFlow's import may be holding fd 2 back
        os._exit(EXIT_PREEMPTED)   # mid-import: no clean-up to run, and none that could hang
    for s in SIGNALS:
        signal.signal(s, handle)
