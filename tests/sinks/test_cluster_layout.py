"""The README's ClickHouse-on-a-cluster migration, tried on the ClickHouse in use: two shards (two databases
of one server, each holding visitwire's own tables as its migrations make them), Distributed tables over
them sharded by cityHash64(visitor_id), and the history store pointed at the Distributed names. The read
side's answers on the sharded layout must equal a single server's on the same rows, replays included.
(The Replicated engines: tests/sinks/test_replicas.py.)"""
from __future__ import annotations

import uuid

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from engine.services import free_port, start_clickhouse
from sinks.history import open_history
from sinks.reads import queries as hq
from sinks.reads.profiles import member_profile
from sinks.reads.rfm import member_stats
from sinks.reads.usage import usage
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=5, visitors=40, members=12, weeks=3)
LATER = generate(seed=6, visitors=30, members=10, weeks=3)  # other visitors and events, written after the move
# a few members of the history before the move and of the rows after it (the by-visitor copies, migration 0230)
MEMBERS = sorted({m for m in DS.owners().values() if m})[:3] + sorted({m for m in LATER.owners().values() if m})[:3]
SHARDED = ("hits", "pageviews", "sessions")  # every table keyed by visitor; the README's cluster DDL
# The profile the README asks for on a cluster: subqueries over a second Distributed table read each
# shard's own part (exact when both sides are sharded by visitor), inserts reach the shards before they
# return (so a flush that returned is stored, as on one server).
PROFILE = ("<distributed_product_mode>local</distributed_product_mode>"
           "<insert_distributed_sync>1</insert_distributed_sync>")


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    """A ClickHouse whose cluster `two` has two shards on itself: databases s1 and s2 (the Distributed
    tables name database '' so that each shard reads its own default database)."""
    port, tag = free_port(), uuid.uuid4().hex[:6]
    shards = (f"vw_s1_{tag}", f"vw_s2_{tag}")
    remote = "<remote_servers><two>" + "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{port}</port><default_database>{db}</default_database>"
        "</replica></shard>" for db in shards) + "</two></remote_servers>\n"
    svc = start_clickhouse(port=port, workdir=str(tmp_path_factory.mktemp("ch-cluster")), extra_config=remote,
                           profile=PROFILE)
    base = svc.url.rsplit("/", 1)[0]
    try:
        yield svc, base, shards
    finally:
        svc.stop()


def test_the_read_side_on_two_shards_equals_one_server(two_shards):
    """The README's steps on a running single-server history: Distributed tables created beside the old
    ones, renamed into their place (the old kept as *_single), the old rows copied over once, then the
    writes go on; every read below equals a single server's that took the same writes."""
    svc, base, shards = two_shards
    client = Client("127.0.0.1", port=svc.port)
    for db in shards:  # each shard: visitwire's tables as its migrations make them
        store = open_history(f"{base}/{db}")
        store.init_schema()
        store.close()
    dist, one = f"vw_d_{uuid.uuid4().hex[:6]}", f"vw_one_{uuid.uuid4().hex[:6]}"
    sharded, single = open_history(f"{base}/{dist}"), open_history(f"{base}/{one}")
    try:
        for store in (sharded, single):
            store.init_schema()
            DS.write_to(store)  # the history before the move
        for table in SHARDED:
            client.execute(f"CREATE TABLE {dist}.{table}_all AS {shards[0]}.{table} "
                           f"ENGINE = Distributed(two, '', {table}, cityHash64(visitor_id))")
            client.execute(f"RENAME TABLE {dist}.{table} TO {dist}.{table}_single, "
                           f"{dist}.{table}_all TO {dist}.{table}")
            client.execute(f"INSERT INTO {dist}.{table} SELECT * FROM {dist}.{table}_single")
        for store in (sharded, single):
            LATER.write_to(store)  # new rows after the move: the rollups' views must still see them
            DS.write_to(store)  # and a replay of the old ones: the dedup must stay exact across shards
        per_shard = [client.execute(f"SELECT count() FROM {db}.pageviews")[0][0] for db in shards]
        assert all(per_shard) and sum(per_shard) == 2 * len(DS.pageviews) + len(LATER.pageviews), per_shard

        lo, hi = DS.now - 30 * 86400, DS.now + 1
        for name, read in (("event_counts", hq.event_counts),
                           ("range_totals", lambda s: hq.range_totals(s, lo, hi)),
                           ("sessions_summary", lambda s: hq.sessions_summary(s, lo, hi)),
                           ("top pages", lambda s: hq.top(s, "path", lo, hi, limit=20)),
                           ("pageviews per hour", lambda s: hq.pageviews_per_interval(s, lo, hi, 3600)),
                           ("hits per hour", lambda s: hq.hits_per_interval(s, lo, hi, 3600)),
                           ("product usage", lambda s: usage(s, "product_id")),
                           ("member stats", lambda s: sorted(member_stats(s), key=lambda m: m["member_id"])),
                           ("member profiles", lambda s: [member_profile(s, m, now=DS.now) for m in MEMBERS])):
            assert read(sharded) == read(single), name
        assert all(member_profile(sharded, m, now=DS.now) for m in MEMBERS)
        assert hq.event_counts(sharded)["pageviews"] == len({p["event_id"] for p in DS.pageviews + LATER.pageviews})
        assert sum(r["pageviews"] for r in hq.pageviews_per_interval(sharded, lo, hi, 3600)) == \
            len({p["event_id"] for p in DS.human_pageviews + LATER.human_pageviews})  # rollups, from the views
        assert len(member_stats(sharded)) == len({m for m in DS.owners().values() if m} |
                                                  {m for m in LATER.owners().values() if m})
    finally:
        sharded.close()
        single.close()
    # without the profile's distributed_product_mode, such a subquery is refused outright
    with pytest.raises(ServerException, match="Double-distributed IN/JOIN subqueries is denied"):
        client.execute(f"SELECT count() FROM {dist}.pageviews WHERE visitor_id IN "
                       f"(SELECT visitor_id FROM {dist}.sessions)", settings={"distributed_product_mode": "deny"})
