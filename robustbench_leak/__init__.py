"""robustbench-leak: robustness-vs-accuracy leaderboards for windowed large-kernel CNNs."""

__version__ = "0.1.0"
