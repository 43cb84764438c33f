"""``python -m cnn_im2col.cli``: the ``cnn-im2col`` command, as ``python -m cnn_im2col``."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
