"""cnn-im2col: a convolutional neural network engine in NumPy, convolutions lowered to GEMM via im2col."""

__version__ = "0.1.0"
