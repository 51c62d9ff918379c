"""The hits agent and the session timer, plus the batch logic they run (`HitProcessor`).

`HitProcessor.process(values)` is pure batch logic with no Kafka in it: raw hit
JSON in, history rows + page views + closed sessions + one LiveDelta out. The Faust
agent feeds it batches (`stream.take_events`) and hands the output to the worker
runtime (processors/worker.py), which writes sinks and acks offsets.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, MutableMapping, Sequence

import numpy as np
import orjson

from config.live_layout import LiveDelta
from config.rows import Columns, JsonColumns
from config.settings import Settings
from processors import kernels as K
from processors.counters import BatchColumns, aggregate
from processors.counters import warm_up as warm_up_aggregation
from processors.enrich import (KIND_BOT, KIND_ERROR, KIND_OTHER, KIND_PAGEVIEW, KIND_REDIRECT, KIND_STATIC,
                               Classified, Enricher, column_decoder, columns_of, ts_in_range, valid_columns,
                               validate_hit)
from processors.sessionizer import REASON_SHUTDOWN, Sessionizer, Watermark

log = logging.getLogger(__name__)

KIND_CODE = {KIND_PAGEVIEW: K.K_PAGEVIEW, KIND_STATIC: K.K_STATIC, KIND_REDIRECT: K.K_REDIRECT,
             KIND_ERROR: K.K_ERROR, KIND_BOT: K.K_BOT, KIND_OTHER: K.K_OTHER}


@dataclass
class BatchOutput:
    hits: Sequence[dict] = field(default_factory=list)    # valid hits (config.rows.Columns), history "hits" table
    pageviews: list[dict] = field(default_factory=list)   # PageView records
    sessions: list[dict] = field(default_factory=list)    # Session records closed by this batch
    delta: LiveDelta = field(default_factory=LiveDelta)
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # event ts of the valid hits
    dropped: int = 0
    purchases: list[tuple[str, float]] = field(default_factory=list)  # (member_id, ts) of human purchase goals
    session_updates: list[dict] = field(default_factory=list)  # open sessions as they go (close_reason "open")


class HitProcessor:
    """Enrich + sessionize + aggregate one batch at a time."""

    def __init__(self, settings: Settings, store: MutableMapping[str, dict] | None = None):
        self.settings = settings
        self.enricher = Enricher(settings.processing)
        # the numba path reads raw JSON straight into columns; the numpy twin decodes hit by hit
        self.decoder = column_decoder() if settings.processing.use_numba else None
        self.sessions = Sessionizer(settings.processing, {} if store is None else store)
        self.watermarks: dict[int, Watermark] = {}  # per Kafka partition
        self._seeded = False
        self.use_numba = settings.processing.use_numba
        self.drops: Counter[str] = Counter()
        self.hits_in = 0

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernels and load the User-Agent rules before the first
        batch, instead of in it (the rules alone take ~0.3 s). The warm-up hit goes to a throwaway
        sessionizer: the real store (a Faust table) must not be touched before the app starts."""
        warm_up_aggregation(self.use_numba)
        K.murmur2_positive([b"warm-up"])  # the changelog's key hash (TableStore.set_many), compiled or loaded
        sessions, self.sessions = self.sessions, Sessionizer(self.settings.processing, {})
        try:
            self.process([orjson.dumps({"event_id": "warm-up", "ts": 60.0, "visitor_id": "visitwire-warm-up",
                                        "status": 200, "method": "GET", "path": "/", "user_agent": "Mozilla/5.0",
                                        "resp_bytes": 1})])
        finally:
            self.sessions = sessions
            self.watermarks.clear()
            self.hits_in = 0

    def process(self, values: Iterable[bytes | str | dict], partitions: list[int] | None = None,
                transposed: bytes | None = None) -> BatchOutput:
        """One batch; `partitions[i]` is the Kafka partition of values[i] (default all 0). `transposed`:
        `self.decoder.transpose(values)`, when the caller made it already (the hits reader process does,
        while the previous batch is processed)."""
        values = values if isinstance(values, Sequence) else list(values)  # JoinedValues stay joined
        self.hits_in += len(values)
        out = BatchOutput()
        hits, parts, columns = self._valid_hits(values, partitions, out, transposed)
        if not out.hits:  # the slow paths: the history gets the columns as they are
            out.hits = Columns(columns, len(hits))
        classes = self.enricher.classify_all(hits, columns)
        cols = BatchColumns(self.settings.processing.feed_length)
        cols.add_hits(columns, [KIND_CODE[c.kind] for c in classes])
        self._sessionize(columns, classes, parts, cols, out)
        if len(hits):
            out.delta = aggregate(cols, self.use_numba)
            out.ts = np.asarray(cols.ts)
        self._observe_times(cols.ts, parts)
        return out

    def _valid_hits(self, values: list, partitions: list[int] | None, out: BatchOutput, transposed: bytes | None,
                    ) -> tuple[Sequence[Mapping[str, Any]], list[int], dict[str, Sequence[Any]]]:
        """The hits that pass validate_hit (a sequence of hit mappings), their partitions and their columns
        (columns_of); the others are counted and logged. The usual batch: its text alone goes to the history
        (`out.hits`); the processors get the columns they read (PROCESSED_COLUMNS), not the others."""
        decoded = self.decoder.decode(values, transposed) if self.decoder is not None else None  # the usual batch
        if decoded is not None and ts_in_range(decoded[0]["ts"]):
            columns, text = decoded
            parts = partitions if partitions is not None else [0] * len(values)
            # the text alone: held until the history flush, these columns' objects would make each next
            # batch's land on fresh memory (JsonColumns.of_text)
            out.hits = JsonColumns.of_text(self.decoder.fields, len(values), [text])
            return Columns(columns, len(values)), parts, columns
        hits = _decode_all(values)
        columns = valid_columns(hits)
        if columns is not None:  # the usual batch: no hit-by-hit checks
            return hits, partitions if partitions is not None else [0] * len(hits), columns
        valid, parts = [], []
        for i, hit in enumerate(hits):
            why = "not JSON" if hit is _NOT_JSON else validate_hit(hit)
            if why:
                self._drop(why)
                out.dropped += 1
                continue
            valid.append(hit)
            parts.append(partitions[i] if partitions is not None else 0)
        return valid, parts, columns_of(valid)

    def _sessionize(self, columns: Mapping[str, Sequence[Any]], classes: list[Classified], parts: list[int],
                    cols: BatchColumns, out: BatchOutput) -> None:
        """Page views and goals, in hit order, into the sessions; page views to `out` and the columns."""
        rows = [row for row, c in enumerate(classes) if c.kind == KIND_PAGEVIEW or c.goal]
        pageviews = iter(self.enricher.pageviews_at(columns, [r for r in rows if classes[r].kind == KIND_PAGEVIEW],
                                                    classes))
        on_pageview, closed, pageviews_out = self.sessions.on_pageview, out.sessions, out.pageviews
        # cols.add_pageview, inline (once per page view): its rows, records and session starts
        pv_rows, pv_records, start_rows = cols.pv_row, cols.pageviews, cols.session_start_rows
        purchase = self.settings.analytics.purchase_goal
        goal_products = {purchase: "order_products", self.settings.analytics.cart_goal: "cart_products"}
        for row in rows:
            c = classes[row]
            if c.kind == KIND_PAGEVIEW:
                pv = next(pageviews)
                pv["session_id"], started = on_pageview(pv, closed, parts[row])
                pageviews_out.append(pv)
                pv_rows.append(row)
                pv_records.append(pv)
                if started:
                    start_rows.append(row)
            elif c.goal:
                self.sessions.on_goal(columns["visitor_id"][row], columns["event_id"][row], c.goal_value)
            if c.goal:
                cols.add_goal(row, c.goal_value, c.goal, columns["path"][row] or "", columns["visitor_id"][row],
                              columns["member_id"][row] or "")
                if c.goal in goal_products:  # the live top products: carted and ordered units per minute
                    cols.add_goal_products(row, goal_products[c.goal], self.enricher.goal_items(
                        c.goal, columns["query"][row] or "", columns["extra"][row]))
                if c.goal == purchase and not c.is_bot and columns["member_id"][row]:
                    out.purchases.append((columns["member_id"][row], float(columns["ts"][row])))
        out.session_updates = self.sessions.take_updates()

    def _observe_times(self, ts: list[float], parts: list[int]) -> None:
        """Advance each partition's event-time clock to its latest hit of the batch."""
        if not ts:
            return
        part = np.asarray(parts, dtype=np.int64)
        stamps = np.asarray(ts, dtype=np.float64)
        for p in np.unique(part).tolist():
            self.watermark(p).observe(float(stamps[part == p].max()))

    def watermark(self, partition: int) -> Watermark:
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = Watermark()
        return wm

    def keep_partitions(self, keep: set[int]) -> int:
        """A rebalance left this worker `keep`: forget the sessions and clocks of the other partitions."""
        for p in [p for p in self.watermarks if p not in keep]:
            del self.watermarks[p]
        return self.sessions.keep_partitions(keep)

    def _drop(self, why: str) -> None:
        self.drops[why] += 1
        n = self.drops[why]
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... drop of each kind
            log.warning("dropped %d hit(s) so far: %s (fix the producer of visitwire.hits)", n, why)

    def tick(self) -> list[dict]:
        """Timer: close sessions whose deadline the watermark has passed."""
        if not self._seeded:  # restarted with restored sessions: their partitions' clocks start there
            self._seeded = True
            purge = getattr(self.sessions.store, "purge_deleted", None)
            if purge is not None:
                purge()
            for p, end in self.sessions.max_end_by_partition().items():
                if p not in self.watermarks:
                    self.watermark(p).observe(end)
        now = {p: wm.now() for p, wm in self.watermarks.items() if wm.max_ts is not None}
        return self.sessions.expire(now) if now else []

    def end_of_input(self) -> list[dict]:
        return self.sessions.close_all(REASON_SHUTDOWN)


_NOT_JSON = object()  # a value that did not decode


def _decode(raw: bytes | str | dict) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return _NOT_JSON


def _decode_all(values: list) -> list:
    try:  # the usual batch: all bytes, all JSON
        return list(map(orjson.loads, values))
    except (orjson.JSONDecodeError, TypeError):
        return list(map(_decode, values))


INTAKE_MODES = ("bulk", "stream")  # the values of processing.intake


@dataclass(frozen=True)
class Intake:
    """How a worker takes the hits, in one vocabulary.

    mode: processing.intake: "bulk" (librdkafka batches from a reader process, processors/hits_intake.py)
      or "stream" (the Faust agent, `stream.take_events`; about ten times slower).
    partitions: for bulk, "all" (its own consumer group: the embedded runtime's only worker; Faust does
      not subscribe to the hits) or "assigned" (exactly the hits partitions Faust's group gives this
      worker, co-partitioned with the sessions table, so workers scale out; Faust's own intake of them is
      paused and a placeholder agent keeps the subscription). The stream mode always reads those."""
    mode: str = "bulk"
    partitions: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in INTAKE_MODES:
            raise ValueError(f"intake mode must be one of {INTAKE_MODES}, not {self.mode!r}")
        if self.partitions not in ("all", "assigned"):
            raise ValueError(f"intake partitions must be 'all' or 'assigned', not {self.partitions!r}")

    @property
    def follows_group(self) -> bool:
        """Reads the partitions Faust's group assigns (and takes part in its rebalances)."""
        return self.mode == "stream" or self.partitions == "assigned"


def register_agents(vw: Any, runtime: Any) -> None:
    """How the hits come in (runtime.intake, see Intake), plus the 1 s session timer, wired to a
    processors.worker.WorkerRuntime."""
    app, p, intake = vw.app, vw.settings.processing, runtime.intake

    if intake.mode == "stream":
        @app.agent(vw.hits_topic, name="visitwire.processors.hits")
        async def hits(stream):
            async for events in stream.take_events(p.batch_size, within=p.batch_timeout_s):
                await runtime.on_events(events)
    elif intake.follows_group:
        @app.agent(vw.hits_topic, name="visitwire.processors.hits")
        async def hits(stream):
            async for event in stream.events():
                # Faust's intake of these partitions is paused; anything that slips through is never acked,
                # so Faust never commits it: the BulkHitsConsumer reads and commits these partitions.
                event.message.incref()
                runtime.faust_leaked += 1

    if intake.follows_group:
        # Faust no longer waits for held messages on a rebalance (stream_wait_empty=False, see app.py):
        # flush and commit them here, so the next owner of a partition starts from sealed session state
        # and committed offsets instead of replaying them.
        async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            await runtime.on_revoked(revoked)
        app.on_partitions_revoked.connect(on_partitions_revoked)

        async def on_partitions_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            runtime.on_assigned(assigned)
        app.on_partitions_assigned.connect(on_partitions_assigned)
        if intake.mode == "bulk":
            runtime.follow_assignments()
        else:
            runtime.start_where_committed()

    @app.timer(1.0, name="visitwire.processors.session_timer")
    async def session_timer():
        await runtime.on_tick()


async def ensure_topic(bootstrap: str, topic: str, *more: str, partitions: int | None = None,
                       security: dict | None = None) -> None:
    """Create the topics with `partitions` partitions unless they exist (the Faust agent would declare them;
    the bulk consumer must not wait for the capture agent to create the hits topic, and a subscriber that
    starts before the first page view, session or segment change must find its topic). Called as
    ensure_topic(bootstrap, topic, partitions) or ensure_topic(bootstrap, *topics, partitions=n)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    names = [topic, *more]
    if partitions is None:  # the two-argument form: the last positional is the partition count
        partitions = int(names.pop())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))  # config/kafka_security.py
    await admin.start()
    try:
        for name in names:  # one at a time: an existing one must not keep the others from being created
            try:
                await admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
            except Exception as e:  # e.g. a broker that forbids topic creation: the topic must then exist already
                log.warning("could not create topic %s (%s); expecting it to exist", name, e)
    finally:
        await admin.close()
