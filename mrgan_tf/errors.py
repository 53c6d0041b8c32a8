"""The one base class of the errors a user can cause and fix (a bad file, flag or folder).

Every tool's own error (VolumeError, MakeRecordsError, SpecError, ExportError,
SynthesisError, EvaluationError, PacsError, DemoError, ...) derives from
``UserError``; ``mrgan_tf.cli`` prints such an error as one line naming the path
and the problem, with no traceback, and exits 1. Each also keeps its old base
(ValueError or RuntimeError), so existing ``except`` clauses still catch it.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the file, folder or flag and what is wrong."""
