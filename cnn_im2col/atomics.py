"""Shared int64 words that two threads hand work through without the GIL: atomic loads, stores
and compare-and-swap on an int64 array's elements, the CPU's spin-wait hint, and an address
turned back into a pointer (for ``numba.carray``).

Numba has no atomics, and a plain read of an array element in a loop may be hoisted out of it
(nothing in the loop writes it, as far as the compiler knows). These are Numba intrinsics that
emit LLVM's atomic instructions: ``load_acquire`` (no later access is moved before it),
``store_release`` (no earlier access is moved after it), and ``compare_exchange`` (sequentially
consistent). On x86 the first two are plain moves that the compiler keeps in place and in order;
the third is ``lock cmpxchg``. Every word is 8-byte aligned, as an int64 array's elements are.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["load_acquire", "store_release", "compare_exchange", "spin_pause", "pointer"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _element(context, builder, array_type, array, index_type, index):
    """A pointer to ``array[index]`` (an int64 array, the index made an intp)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, index, index_type, types.intp)])


def _check(array, *words) -> None:
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        raise TypeError(f"atomics: an int64 array is needed, got {array}")
    for word in words:
        if not isinstance(word, types.Integer):
            raise TypeError(f"atomics: an integer index or value is needed, got {word}")


@intrinsic
def load_acquire(typingctx, array, index):
    """``array[index]`` read atomically, with acquire ordering (int64 array)."""
    _check(array, index)

    def codegen(context, builder, signature, args):
        where = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        return builder.load_atomic(where, "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """``array[index] = value`` written atomically, with release ordering (int64 array)."""
    _check(array, index, value)

    def codegen(context, builder, signature, args):
        where = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        word = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(word, where, "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def compare_exchange(typingctx, array, index, expected, value):
    """Atomically: if ``array[index] == expected``, set it to ``value`` and return True, else
    return False (sequentially consistent; int64 array)."""
    _check(array, index, expected, value)

    def codegen(context, builder, signature, args):
        where = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        new = context.cast(builder, args[3], signature.args[3], types.int64)
        result = builder.cmpxchg(where, old, new, "seq_cst", "seq_cst")
        return builder.extract_value(result, 1)

    return types.boolean(array, index, expected, value), codegen


@intrinsic
def spin_pause(typingctx):
    """The CPU's hint that this is a spin-wait loop (x86's ``pause``: the loop yields the core's
    shared resources to its sibling and leaves it without a memory-order flush); nothing
    elsewhere."""

    def codegen(context, builder, signature, args):
        if _X86:
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(hint, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def pointer(typingctx, address):
    """The int64 ``address`` (an array's ``.ctypes.data``) as a ``voidptr``, for ``numba.carray``.
    The caller keeps the array alive while the pointer is used."""
    if not isinstance(address, types.Integer):
        raise TypeError(f"atomics.pointer: an integer address is needed, got {address}")

    def codegen(context, builder, signature, args):
        word = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.inttoptr(word, cgutils.voidptr_t)

    return types.voidptr(address), codegen
