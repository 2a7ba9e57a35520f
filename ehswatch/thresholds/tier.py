"""`Tier` and `FaultReason`, and the six setpoint latches every sensor is evaluated with."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tier(IntEnum):
    """How dangerous a sensor's reading is; the rules number them 0 to 3."""

    NORMAL = 0
    WARNING = 1
    ALARM = 2
    INTERLOCK = 3


class FaultReason(IntEnum):
    """Why a sensor is in FAULT (an instrument fault, kept apart from the tier)."""

    NONE = 0
    BAD = 1  # NaN, infinite, or flagged bad by its source
    STALE = 2  # no reading for stale_after_s
    CLOCK_SKEW = 3  # readings keep arriving late or from the future (a wrong device clock)


# Each sensor has six latches, one per (side, tier). The column order is fixed: high side
# first, so that when a high and a low latch of the same level are both active (possible
# only transiently, inside a deadband) the high one is reported, in both evaluators.
LATCH_LEVEL = np.array([1, 2, 3, 1, 2, 3], dtype=np.int8)
LATCH_IS_LOW = np.array([False, False, False, True, True, True])
N_LATCHES = 6
LATCH_NAMES = (
    "high.warning",
    "high.alarm",
    "high.interlock",
    "low.warning",
    "low.alarm",
    "low.interlock",
)
