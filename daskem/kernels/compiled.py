"""Loops compiled by numba for the kernels whose NumPy form reads each row several times.

``compiled`` is the one way a kernel compiles a loop: without the GIL (the worker's other threads
keep running), with the float reassociation that lets LLVM vectorize sums (NaN and infinity keep
their meaning), and cached on disk next to the module that defines the loop, or in the user's cache
directory where that is read-only; where neither can be written, compiled in each process.

A loop that sums keeps to loads: where a loop also stores, LLVM checks at run time how far apart its
buffers lie (a store within 256 bytes of a load takes the scalar loop) and the two versions add in
different orders, so the bits of a sum would depend on where the allocator put a work row.
"""

from __future__ import annotations

import numba

# Reassociating the sums lets LLVM vectorize the dot products; NaN and infinity keep their meaning.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def compiled(function):
    """``function`` compiled without the GIL, cached on disk when numba finds a writable place for the
    cache (a read-only install run by a user without a home has none: numba refuses to cache then)."""
    try:
        return numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, cache=False, fastmath=_FASTMATH)(function)
