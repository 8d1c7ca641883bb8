"""Channel-width scaling shared by the model families (``width_multiplier``)."""

from __future__ import annotations


def scaled(channels: int, width_multiplier: float) -> int:
    """``floor(channels * width_multiplier)``, at least 1.

    Floor, as the unofficial port's ``int(c * wm)`` (seed 002): x0.4375 turns ResNet-18's 64/128/256/512
    channels into 28/56/112/224. A 1e-9 slack keeps decimal multipliers such as 0.29 x 100 from
    landing one channel short through binary rounding. Input channels and class counts are never scaled.
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    return max(1, int(channels * width_multiplier + 1e-9))
