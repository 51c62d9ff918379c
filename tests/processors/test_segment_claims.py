"""Several workers never announce the same segment change twice (processors/analytics/claims.py), on a real
redis-server: the change is claimed atomically before it is stored and announced."""
from __future__ import annotations

import threading
import uuid

import pytest

from processors.analytics.claims import SegmentClaims

pytestmark = pytest.mark.integration


def change(member: str, segment: str, previous: str = "") -> dict:
    return {"member_id": member, "ts": 1.0, "segment": segment, "previous_segment": previous, "r": 1, "f": 1, "m": 1}


def test_the_same_change_found_by_two_workers_is_kept_by_one(redis_server):
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    a, b = SegmentClaims.from_url(redis_server.url, prefix), SegmentClaims.from_url(redis_server.url, prefix)
    assert a([change("m1", "vip"), change("m2", "new")]) == [change("m1", "vip"), change("m2", "new")]
    assert b([change("m1", "vip"), change("m3", "new")]) == [change("m3", "new")]  # m1's was a's
    assert b.duplicates == 1
    # a real change later (m1 leaves vip) is anyone's to make, once
    assert b([change("m1", "at_risk", "vip")]) == [change("m1", "at_risk", "vip")]
    assert a([change("m1", "at_risk", "vip")]) == []


def test_racing_workers_keep_each_change_exactly_once(redis_server):
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    members = [f"m{i:04d}" for i in range(500)]
    kept: list[list[dict]] = [[] for _ in range(4)]

    def worker(k: int) -> None:
        claims = SegmentClaims.from_url(redis_server.url, prefix)
        for i in range(0, len(members), 50):
            kept[k] += claims([change(m, "vip") for m in members[i:i + 50]])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c["member_id"] for k in kept for c in k) == members


def test_a_change_that_was_not_stored_is_released(redis_server):
    claims = SegmentClaims.from_url(redis_server.url, f"t{uuid.uuid4().hex[:6]}:")
    assert claims([change("m1", "vip")])
    claims.release([change("m1", "vip")])  # the history write failed
    assert claims([change("m1", "vip")]) == [change("m1", "vip")]  # the next run makes it again
