"""The dose check's one error type: a bad input, flag or missing package, named with what is wrong."""
from __future__ import annotations

from mrgan_tf.errors import UserError


class DoseError(UserError, ValueError):
    """An input the dose check cannot use (no overlap, empty target, not a CT, missing extra, ...)."""
