"""``python -m cnn_im2col``: the ``cnn-im2col`` command (also ``mpiexec -n K python -m mpi4py -m "
"cnn_im2col``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
