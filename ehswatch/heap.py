"""`settle_heap()`: what a part does once it has started, before it settles into its loops."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def settle_heap() -> None:
    """After start, what exists now (the config, the tables: hundreds of thousands of
    objects on a large plant) lives as long as the process:

    - the garbage collector is told to stop walking it (`gc.freeze`): without this, each
      full collection walks it all, and on a 100 000-sensor plant that is a pause of a
      tenth of a second on the control loop;
    - the memory the start needed only for a moment (parsing the config: tens of MB on a
      large plant) goes back to the system (glibc's `malloc_trim`; elsewhere nothing is
      done), so that a part's resident size is what it keeps, not what it once peaked at.
    """
    gc.collect()
    gc.freeze()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
