"""What a server process sets about itself before it starts threads: how the C allocator hands out memory.

glibc gives every thread that allocates its own heap ("arena"), up to eight per core. A gateway's threads are the
database driver's (aiosqlite runs each SQLite connection on a thread of its own) and the default executor's; what
they free stays in their arenas, so over many calls the process's RSS crept up (bench/memory.py: +63 MB over 80,000
calls with the default, +21 MB with two arenas; see docs/performance.md). Two arenas: the main thread's and one
the others share. Elsewhere (musl, macOS) there is nothing to set and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas for threads started from now on; True when the allocator took it."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
