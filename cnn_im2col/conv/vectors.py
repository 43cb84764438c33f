"""What the hand-written vector kernels share: this CPU's vector width, and the few LLVM IR
pieces they are built from.

Numba's loop vectoriser handles a plain loop over contiguous values, but not a kernel that must
keep vectors in registers across a loop (its SLP vectoriser is off, for miscompilations), nor a
loop with more pointers than LLVM will check for overlap at run time (eight), which it leaves
scalar or spills. Those kernels are Numba intrinsics written in LLVM IR with explicit vector
types (``conv/tiled.py``'s tile, ``conv/inverted_residual.py``'s depthwise runs); LLVM lowers
an L-wide vector to whatever registers the CPU has.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba as nb
from llvmlite import ir
from numba.core import cgutils
from numba.core import config as numba_config


def _wide_vectors() -> bool:
    """Whether the CPU Numba compiles for has 512-bit vectors (32 registers of 16 float32): the
    host's, unless ``NUMBA_CPU_NAME`` names another CPU or ``NUMBA_CPU_FEATURES`` leaves them
    out."""
    if numba_config.CPU_NAME not in (None, "host"):
        return False
    features = numba_config.CPU_FEATURES
    if features is not None:
        return "+avx512f" in features.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


WIDE = _wide_vectors()
#: float32 values in one vector register (float64: half as many)
FLOAT32_LANES = 16 if WIDE else 8


@nb.njit(cache=True, inline="always")
def lanes_of(itemsize):
    """The floats of ``itemsize`` bytes (4 or 8) in one vector register of this CPU. From an
    intrinsic's codegen, ``lanes_of.py_func``."""
    return FLOAT32_LANES if itemsize == 4 else FLOAT32_LANES // 2

I64 = ir.IntType(64)
I32 = ir.IntType(32)


def const(value: int) -> ir.Constant:
    """An i64 constant."""
    return ir.Constant(I64, value)


def vector_at(builder: ir.IRBuilder, ptr: ir.Value, index: ir.Value, vt: ir.VectorType
              ) -> ir.Value:
    """A pointer to the ``vt`` vector whose first value is ``ptr[index]``."""
    return builder.gep(builder.bitcast(builder.gep(ptr, [index]), vt.as_pointer()), [const(0)])


def fmuladd(builder: ir.IRBuilder, vt: ir.VectorType) -> ir.Function:
    """LLVM's ``a * b + c`` on ``vt`` vectors (one fused multiply-add where the CPU has it)."""
    kind = "f32" if vt.element == ir.FloatType() else "f64"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt] * 3),
                                          f"llvm.fmuladd.v{vt.count}{kind}")


def splat(builder: ir.IRBuilder, value: ir.Value, vt: ir.VectorType) -> ir.Value:
    """``value`` in every lane of a ``vt`` vector."""
    undef = ir.Constant(vt, ir.Undefined)
    lane0 = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(lane0, undef, ir.Constant(ir.VectorType(I32, vt.count),
                                                            [0] * vt.count))
