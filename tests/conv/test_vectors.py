"""What the hand-written vector kernels share (``conv/vectors.py``): the vector register's width."""

from cnn_im2col.conv import vectors


def test_a_register_holds_16_or_8_float32_and_half_as_many_float64():
    """``lanes_of``: 16 float32 with 512-bit vectors, else 8; float64 half as many; the same from
    its Python function, which the intrinsics' codegen calls."""
    b32, b64 = vectors.lanes_of(4), vectors.lanes_of(8)
    assert b32 == (16 if vectors.WIDE else 8) and b64 == b32 // 2
    assert (vectors.lanes_of.py_func(4), vectors.lanes_of.py_func(8)) == (b32, b64)
