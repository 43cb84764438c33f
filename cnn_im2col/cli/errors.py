"""How the command reports a problem: :class:`CLIError`, a message that ``main`` prints as one line
(``cnn-im2col: error: ...``) with exit code 2, and ``PROG``, the name such messages begin with."""

from __future__ import annotations

PROG = "cnn-im2col"


class CLIError(Exception):
    """A problem to report as one line and exit code 2."""
