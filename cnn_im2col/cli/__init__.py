"""The ``cnn-im2col`` command: ``train`` a LeNet-style network on MNIST, ``evaluate`` a saved model
(``.npz`` or ``.onnx``), ``predict`` the classes of image files, ``bench`` the time of every layer,
``export`` a model to ONNX.

:func:`main` parses the command line (:mod:`.arguments`) and runs the command: :mod:`.train`, or
one of :mod:`.commands`. Errors from bad flags are argparse's (exit 2); errors from the package are
one line on stderr, exit 2, no traceback (under MPI the failing rank then aborts the job, so no
rank waits forever).
"""

from __future__ import annotations

import os
import sys

from .arguments import build_parser
from .commands import cmd_bench, cmd_evaluate, cmd_export, cmd_predict
from .errors import PROG, CLIError
from .train import cmd_train

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cnn-im2col``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "predict": cmd_predict,
        "bench": cmd_bench,
        "export": cmd_export,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cnn-im2col evaluate m.npz | head`: not an error worth a message
        try:
            os.dup2(
                os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
            )  # no second error at exit
        except (OSError, ValueError):
            pass
        return 141
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        message = " ".join(str(exc).split()) if not isinstance(exc, CLIError) else str(exc)
        if (
            isinstance(exc, FileNotFoundError)
            and exc.filename
            and not str(exc).startswith(str(exc.filename))
        ):
            message = f"{exc.strerror}: {exc.filename}" if exc.strerror else message
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
