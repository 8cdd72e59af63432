"""The boolean signal arrays a compiled strategy produces and the simulator consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Signals:
    """Per-bar rule outcomes, each the same length as the candles.

    A value at bar t is decided with data up to and including bar t's close.
    """

    entry_long: BoolArray
    exit_long: BoolArray
    entry_short: BoolArray
    exit_short: BoolArray

    @classmethod
    def empty(cls, n: int) -> Signals:
        """All-false signals of length n."""
        z = np.zeros(n, dtype=np.bool_)
        return cls(z, z.copy(), z.copy(), z.copy())

    def __len__(self) -> int:
        return int(self.entry_long.shape[0])
