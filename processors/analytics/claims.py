"""One announcement per segment change, however many workers score the member.

Each worker re-scores the buyers of the purchases it stored, and the group leader re-scores everyone on
schedule; two of them can find the same change at once (a member buying on two devices whose visitor ids
sit in partitions of two workers, or a purchase re-score beside the scheduled run). Before a change is
stored and announced it is claimed in Redis: one script sets `{key_prefix}seg:{member_id}` to the new
segment and says whether it already was that segment, atomically, so exactly one of them keeps it. A claim
only has to outlive runs that overlap, so it expires after CLAIM_TTL_S: a claim whose change was never
stored (the history away, then Redis too) cannot hide that change for longer.
"""
from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

CLAIM_TTL_S = 600

# for each key: 1 = set to ARGV[i] now (the caller announces it), 0 = already that segment (someone did)
_CLAIM = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[i] then
    out[i] = 0
  else
    redis.call('SET', k, ARGV[i], 'EX', ARGV[#KEYS + 1])
    out[i] = 1
  end
end
return out
"""


class SegmentClaims:
    def __init__(self, client: redis.Redis, key_prefix: str = "vw:"):
        self.client = client
        self.prefix = f"{key_prefix}seg:"
        self._claim = client.register_script(_CLAIM)
        self.duplicates = 0  # changes another worker (or run) had already claimed
        self.errors = 0

    @classmethod
    def from_url(cls, url: str, key_prefix: str) -> "SegmentClaims":
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), key_prefix)

    def __call__(self, changes: list[dict]) -> list[dict]:
        """The changes this caller is the first to make (Redis away: all of them, and said once)."""
        try:
            won = self._claim(keys=[self.prefix + c["member_id"] for c in changes],
                              args=[c["segment"] for c in changes] + [CLAIM_TTL_S])
        except redis.RedisError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning("analytics: segment changes not claimed in Redis (%s); announced without the "
                            "check, so a change two workers found at once may be announced twice", e)
            return changes
        kept = [c for c, w in zip(changes, won) if w]
        self.duplicates += len(changes) - len(kept)
        return kept

    def release(self, changes: list[dict]) -> None:
        """Claimed changes that were not stored: forget the claims, so the next run makes them again."""
        try:
            self.client.delete(*[self.prefix + c["member_id"] for c in changes])
        except redis.RedisError:
            pass  # the claims expire after CLAIM_TTL_S; the change is made again after that
