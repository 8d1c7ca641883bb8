"""Cell time of a run folder's CPU cells, per seed and kind, from the store (the README's CPU-time figure).

    python scripts/cell_time.py results/fashion-mnist
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robustbench_leak.store import StoreReader  # noqa: E402


def main(folder: str) -> None:
    with StoreReader(folder) as store:
        rows = store.conn.execute("""
            SELECT DISTINCT rc.cell_key, rc.kind, rc.seed, c.seconds FROM run_cells rc
            JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done' WHERE c.device LIKE 'cpu%'""").fetchall()
    minutes: dict[tuple[int, str], float] = {}
    cells: dict[int, int] = {}
    for _, kind, seed, seconds in rows:
        minutes[(seed, kind)] = minutes.get((seed, kind), 0.0) + (seconds or 0.0) / 60
        cells[seed] = cells.get(seed, 0) + 1
    for (seed, kind), value in sorted(minutes.items()):
        print(f"seed {seed} {kind}: {value:.1f} min")
    print(f"total {sum(minutes.values()):.1f} min; cells per seed: {cells}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/fashion-mnist")
