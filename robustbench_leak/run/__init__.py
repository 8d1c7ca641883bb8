"""The run wing: a config's grid planned, computed and stored.

``plan`` (config -> typed tasks, pure), ``tasks`` (``TrainTask``, ``EvalTask``, ``RunContext``), ``cells``
(what one cell computes, returning records; no store access), ``training`` and ``packed``/``packing``
(the training loop, used only by train cells), ``executor``/``ray_executor`` (where cells run), ``driver``
(the only writer of the results store), plus ``progress``, ``provenance``, ``lock`` and ``deadline``.
Finished cells are skipped, so a rerun after a crash recomputes only what is missing. Nothing below this
package imports it; ``robustbench_leak.pipeline`` runs a config and renders its leaderboard.
"""
