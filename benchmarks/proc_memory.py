"""What the memory benchmarks (soak, flow_table_bench, chdb_insert_memory, tansu_retention_repro) read: a
process's resident size from /proc, and the least-squares slope of a series of such sizes."""
from __future__ import annotations

from pathlib import Path


def rss_mb(pid: int | str = "self") -> float | None:
    """VmRSS of the process in MB; None when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points: a leak shows as a steady positive one (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0
