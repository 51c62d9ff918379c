"""Free-space checks for the embedded history store: a full disk stops writes before chdb fails.

chdb reserves about 41 MiB per insert (measured) and a 20 MB data dir lost 195,000 of 200,000
hits while the run said every event was processed. Now an insert first checks the free space of
the store's directory; below `min_free_mb` it raises DiskFull, a SinkUnavailable: the worker keeps
the batch, its Kafka offsets stay uncommitted, and the runtime stops the run with the counts.
"""
from __future__ import annotations

import shutil

from sinks.base import SinkUnavailable


class DiskFull(SinkUnavailable):
    """Too little free space where the history is written; the message says where and how much."""


def free_mb(path: str) -> float:
    return shutil.disk_usage(path).free / (1 << 20)


def check_free_space(path: str, min_free_mb: int, what: str = "the history store") -> None:
    """Raise DiskFull when `path`'s file system has less than `min_free_mb` MiB free."""
    if min_free_mb <= 0:
        return
    try:
        free = free_mb(path)
    except OSError:
        return  # a missing directory fails later with its own clear message
    if free < min_free_mb:
        raise DiskFull(f"disk full: {free:.0f} MiB free in {path}, {what} needs at least {min_free_mb} MiB "
                       "(history.min_free_mb); free some space or move data_dir / history.url to a larger disk")
