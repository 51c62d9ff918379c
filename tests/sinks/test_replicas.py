"""The README's ClickHouse replication, tried on the ClickHouse in use (18.16): one ZooKeeper, two replicas of one
shard (own ports and dirs; zookeeper, macros {shard}/{replica} and a remote_servers cluster in each config), and
visitwire's own tables, as its migrations make them, turned into their Replicated engines by the README's steps on
a server that already held a shop's history. Writes go through replica A, every read the screen uses through
replica B, and B's answers must equal a single server's on the same writes; then B is stopped, A takes new rows
and a replay of old ones, and B, started again, catches up to the same answers."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid

import pytest
from clickhouse_driver import Client

from engine.services import free_port, start_clickhouse, start_zookeeper
from engine.web.testing import served_app
from sinks.history import open_history
from sinks.reads import day_tables, host_days, member_days
from sinks.reads import queries as hq
from sinks.reads.goal_events import default_config
from sinks.reads.profiles import member_profile
from sinks.reads.rfm import member_stats
from sinks.testing.events import generate

pytestmark = pytest.mark.integration

DS = generate(seed=7, visitors=40, members=12, weeks=3)  # the shop's history before replication
LATER = generate(seed=8, visitors=30, members=10, weeks=3)  # written while replica B is down
MEMBERS = sorted({m for m in DS.owners().values() if m})[:3] + sorted({m for m in LATER.owners().values() if m})[:3]
DB = "vw"  # the same database name on every replica: it is part of each table's ZooKeeper path
CLUSTER = "replicas"
# The screen's per-day caches, kept local: each server computes them from its own rows. Before a server checked
# system.replicas, a read through a lagging replica (its day_rows fetched before the rows) stored a day's figures
# from the older rows under the new stamp (the Site list said 454 page views for 868); replicated, A served them too.
CACHES = ("member_days", "member_days_done", "host_days", "host_days_done")
MORE = generate(seed=9, visitors=10, members=4, weeks=3)  # written while replica B lags


def _config(zk_port: int, replica: str, interserver: int, ports: tuple[int, int]) -> str:
    """What a replica adds to clickhouse-server's config: where ZooKeeper is, its macros, the cluster (for ON
    CLUSTER), and the port the other replica fetches parts from (18.16 replicates nothing without it)."""
    return (f"<zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>"
            f"<macros><shard>01</shard><replica>{replica}</replica></macros>"
            f"<interserver_http_host>127.0.0.1</interserver_http_host><interserver_http_port>{interserver}"
            "</interserver_http_port><distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
            f"<remote_servers><{CLUSTER}><shard><internal_replication>true</internal_replication>"
            + "".join(f"<replica><host>127.0.0.1</host><port>{p}</port></replica>" for p in ports)
            + f"</shard></{CLUSTER}></remote_servers>")


class Replica:
    """One clickhouse-server of the pair, which can be stopped and started again on its data and ports."""

    def __init__(self, name: str, workdir: str, zk_port: int, ports: tuple[int, int], port: int):
        self.name, self.workdir, self.port = name, workdir, port
        self.config = _config(zk_port, name, free_port(), ports)
        self.svc = None
        self.start()

    def start(self) -> None:
        self.svc = start_clickhouse(port=self.port, workdir=self.workdir, extra_config=self.config)

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()

    def url(self, db: str = DB) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.port}/{db}"

    def client(self) -> Client:
        return Client("127.0.0.1", port=self.port)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    zk = start_zookeeper(workdir=str(tmp_path_factory.mktemp("zookeeper")))
    started = []
    try:
        ports = (free_port(), free_port())
        for name, port in zip("ab", ports):
            started.append(Replica(name, str(tmp_path_factory.mktemp(f"ch-{name}")), zk.port, ports, port))
        yield started
    finally:
        for r in started:
            r.stop()
        zk.stop()


_FAMILY = re.compile(r"^(\w*)MergeTree(?:\(([^)]*)\))?")


def replicated_engine(engine_full: str, table: str) -> str:
    """ReplacingMergeTree(`end`) PARTITION BY ... -> ReplicatedReplacingMergeTree('<path>', '{replica}', `end`) ..."""
    def swap(m: re.Match) -> str:
        args = f"'/clickhouse/tables/{{shard}}/{DB}/{table}', '{{replica}}'" + (f", {m.group(2)}" if m.group(2) else "")
        return f"Replicated{m.group(1)}MergeTree({args})"
    return _FAMILY.sub(swap, engine_full, count=1)


def make_replicated(client: Client) -> list[str]:
    """The README's steps on one replica whose database visitwire's migrations made: each MergeTree table but the
    replica's own migration record and the screen's caches gets a Replicated twin in its place, the old rows copied
    over once (a replica that had none copies none and fetches the others' parts). The materialized views name
    their source and target tables, so they follow the names to the new tables."""
    tables = client.execute(f"SELECT name, engine_full FROM system.tables WHERE database = '{DB}' "
                            "AND engine LIKE '%MergeTree' AND engine NOT LIKE 'Replicated%' "
                            f"AND name NOT IN {('schema_migrations',) + CACHES} "
                            "AND name NOT LIKE '.inner%' ORDER BY name")
    for table, engine_full in tables:
        client.execute(f"CREATE TABLE {DB}.{table}_repl AS {DB}.{table} "
                       f"ENGINE = {replicated_engine(engine_full, table)}")
        client.execute(f"RENAME TABLE {DB}.{table} TO {DB}.{table}_single, {DB}.{table}_repl TO {DB}.{table}")
        client.execute(f"INSERT INTO {DB}.{table} SELECT * FROM {DB}.{table}_single")
        client.execute(f"DROP TABLE {DB}.{table}_single")
    return [t for t, _ in tables]


def sync(replica: Replica, tables: list[str], timeout: float = 60.0) -> None:
    """Wait until the replica has fetched every part the other wrote (after a start it first has to reconnect
    to ZooKeeper: its tables are read-only until then and SYNC REPLICA refuses)."""
    client, deadline = replica.client(), time.monotonic() + timeout
    ready = f"SELECT count(), sum(is_readonly) FROM system.replicas WHERE database = '{DB}'"
    try:
        while client.execute(ready)[0] != (len(tables), 0):
            assert time.monotonic() < deadline, f"replica {replica.name} still read-only after {timeout:.0f}s"
            time.sleep(0.1)
        for table in tables:
            client.execute(f"SYSTEM SYNC REPLICA {DB}.{table}")
    finally:
        client.disconnect()


def replay_in_other_batches(ds, store, rows: int = 97) -> None:
    """The rows of `ds` again, cut into batches unlike the first write's (a worker's replay after a restart)."""
    for table, events in (("hits", ds.hits), ("pageviews", ds.pageviews), ("sessions", ds.sessions)):
        for i in range(0, len(events), rows):
            store.write(table, events[i:i + rows])


def _screen_urls() -> list[str]:
    """Every GET the screen's pages make of the web API, with times inside the shop's history (`to` also fixes the
    'now' that recency is counted from: the wall clock moves between two reads)."""
    lo, hi, site = int(DS.now) - 30 * 86400, int(DS.now) + 1, int(DS.now) - 90 * 86400
    member = sorted({m for m in DS.owners().values() if m})[0]
    visitor = next(p["visitor_id"] for p in DS.pageviews if p["member_id"] == member)
    product = sorted({p["product_id"] for p in DS.pageviews if p["product_id"]})[0]
    return [f"api/stats?from={lo}&to={hi}", f"api/stats?from={lo}&to={hi}&interval=hour",
            f"api/stats?from={site}&to={hi}&by=host&metrics=pageviews&limit=100",
            f"api/stats?from={lo}&to={hi}&by=page&limit=20", f"api/visitors/{visitor}",
            f"api/customers?to={hi}", f"api/segments?to={hi}", "api/products", "api/products/sales",
            "api/transitions?page=/cart", "api/funnels", "api/funnels/purchase", "api/goals", "api/cohorts",
            "api/annotations", f"api/profiles/member/{member}?to={hi}", f"api/profiles/visitor/{visitor}?to={hi}",
            f"api/recommendations/{product}", f"api/recommendations/bought/{product}",
            f"api/recommendations/member/{member}", f"api/recommendations/visitor/{visitor}"]


def screen_reads(store) -> dict:
    """The web API's answers to every read of the screen, served from `store` by the real app."""
    out = {}
    with served_app(store) as base:
        for url in _screen_urls():
            try:
                with urllib.request.urlopen(base + url, timeout=60) as answer:
                    out[url] = json.loads(answer.read())
            except urllib.error.HTTPError as e:
                raise AssertionError(f"{url}: {e.code} {e.read()[:300]!r}") from None
    return out


def kept(store) -> dict[str, list[tuple]]:
    """Each per-day cache's rows under the current stamps of their days: what a read takes from it."""
    out = {}
    for table, key, fields, stamps in (
            ("host_days", "host", host_days.FIELDS, host_days.day_stamps(store, 0, 10**6)),
            ("member_days", "member_id", member_days.FIELDS, member_days.day_stamps(store, default_config(), 10**6))):
        days = sorted(stamps)
        rows = store.query(f"SELECT DISTINCT day, {key}, {', '.join(fields)} FROM {table} "
                           "WHERE stamp = transform(day, %(days)s, %(stamps)s, '')",
                           {"days": days, "stamps": [stamps[d] for d in days]})
        out[table] = sorted(tuple(round(float(r[c]), 6) if isinstance(r[c], float) else r[c]
                                  for c in ("day", key, *fields)) for r in rows)
    return out


def cache_rows(client: Client) -> dict[str, int]:
    return {t: client.execute(f"SELECT count() FROM {DB}.{t}")[0][0] for t in CACHES}


def test_replica_b_answers_what_a_took_and_catches_up_after_a_stop(replicas):
    a, b = replicas
    ca, cb = a.client(), b.client()
    one = f"vw_one_{uuid.uuid4().hex[:6]}"  # the single server of the comparison: a plain database on A
    ca.execute(f"CREATE DATABASE {DB} ON CLUSTER {CLUSTER}")  # the cluster's DDL reaches both replicas
    assert [DB] in [list(r) for r in cb.execute("SHOW DATABASES")]
    on_a, single = open_history(a.url()), open_history(a.url(one))
    on_b = open_history(b.url())
    try:
        for store in (on_a, single):  # A: a server already holding a shop's history
            store.init_schema()
            DS.write_to(store)
        on_b.init_schema()  # B: a new server, its tables made by the same migrations
        tables = make_replicated(cb)  # B first: its empty tables then take A's rows as A copies them in
        assert make_replicated(ca) == tables and {"hits", "pageviews", "sessions", "day_rows"} <= set(tables)
        sync(b, tables)
        assert cb.execute(f"SELECT uniqExact(event_id) FROM {DB}.pageviews")[0][0] == \
            len({p["event_id"] for p in DS.pageviews})  # B fetched the history A copied in
        truth = screen_reads(single)
        for name, answer in screen_reads(on_b).items():
            assert answer == truth[name], f"{name} read through replica B"

        on_b.close()  # a server with clients connected waits for them before it stops
        cb.disconnect()
        b.stop()
        for store in (on_a, single):
            LATER.write_to(store)  # new visitors while B is down
            DS.write_to(store)  # a replay of the old rows in the same batches: A drops these blocks as seen
            replay_in_other_batches(DS, store)  # and in others: A stores them again, the reads must not count them
        b.start()
        on_b = open_history(b.url())
        sync(b, tables)
        truth, on_a_reads = screen_reads(single), screen_reads(on_a)
        for name, answer in screen_reads(on_b).items():
            assert answer == truth[name] == on_a_reads[name], f"{name} read through replica B after its restart"
        # the figures are right, not just equal: every page view and member counted once
        assert hq.event_counts(on_b)["pageviews"] == len({p["event_id"] for p in DS.pageviews + LATER.pageviews})
        assert sum(r["pageviews"] for r in hq.pageviews_per_interval(on_b, DS.now - 30 * 86400, DS.now + 1, 3600)) \
            == len({p["event_id"] for p in DS.human_pageviews + LATER.human_pageviews})
        assert len(member_stats(on_b)) == len({m for m in DS.owners().values() if m} |
                                               {m for m in LATER.owners().values() if m})
        assert all(member_profile(on_b, m, now=DS.now) for m in MEMBERS)

        # B lags: it has fetched the day counts of new rows but not the rows when the screen reads through it
        data = [t for t in tables if t != "day_rows"]
        for table in data:
            cb.execute(f"SYSTEM STOP FETCHES {DB}.{table}")
        for store in (on_a, single):
            MORE.write_to(store)
        cb.execute(f"SYSTEM SYNC REPLICA {DB}.day_rows")
        assert cb.execute(f"SELECT uniqExact(event_id) FROM {DB}.pageviews")[0][0] < \
            ca.execute(f"SELECT uniqExact(event_id) FROM {DB}.pageviews")[0][0]
        assert day_tables.behind(on_b, "SELECT * FROM pageviews") and not day_tables.behind(on_a, "pageviews")
        before = cache_rows(cb)
        for name, answer in screen_reads(on_b).items():  # exact for the rows B holds: the single server's before MORE
            assert answer == truth[name], f"{name} read through replica B while it lagged"
        assert cache_rows(cb) == before  # and it kept nothing computed from them under the new stamps
        for table in data:
            cb.execute(f"SYSTEM START FETCHES {DB}.{table}")
        sync(b, tables)
        empty = [t for t in tables if not cb.execute(f"SELECT count() FROM {DB}.{t}")[0][0]]
        assert empty and not day_tables.behind(on_b, " ".join(tables))  # an empty table's log is empty too
        truth = screen_reads(single)
        for name, answer in screen_reads(on_a).items():  # the writers' replica is unharmed: its caches are its own
            assert answer == truth[name], f"{name} read through replica A after B read while lagging"
        for name, answer in screen_reads(on_b).items():  # caught up, B computes and keeps MORE's days
            assert answer == truth[name], f"{name} read through replica B after it caught up"
        grown = cache_rows(cb)
        assert all(grown[t] > before[t] for t in CACHES), (before, grown)
        on_single = kept(single)
        assert kept(on_b) == kept(on_a) == on_single and all(on_single.values())
    finally:
        for store in (on_a, on_b, single):
            store.close()
