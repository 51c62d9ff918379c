-- visitwire history schema, version 0001: raw event tables + idempotent per-minute rollups.
--
-- Portable subset: runs on ClickHouse 18.16 (clickhouse-driver) and on chdb (ClickHouse 26).
-- A modern server could do better, and a later migration may switch to it:
--   * DateTime64(6) instead of DateTime + the *_epoch Float64 twin columns (18.16 has no DateTime64);
--   * LowCardinality(String) for method/host/channel/browser/os/device (18.16: experimental flag only);
--   * Map(String, String) for `extra` (18.16: none; we keep two parallel arrays);
--   * TTL for retention, CODEC(Delta, ZSTD) on time columns, projections for top-N by dimension.
-- Every statement is IF NOT EXISTS so a migration interrupted half-way can simply be run again.
--
-- Idempotency: raw tables are ReplacingMergeTree keyed on event_id / session_id, but they only
-- collapse duplicates when parts merge, so queries must count uniqExact(event_id) or read FINAL.
-- Rollups are AggregatingMergeTree holding uniqExact states of ids: re-inserting an event adds
-- an id already in the set, so replays and at-least-once redelivery change nothing.

CREATE TABLE IF NOT EXISTS hits (
    event_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    client_ip String,
    client_port UInt16,
    server_ip String,
    server_port UInt16,
    method String,
    host String,
    uri String,
    path String,
    query String,
    referrer String,
    user_agent String,
    status Nullable(UInt16),
    resp_bytes UInt64,
    content_type String,
    latency_ms Nullable(Float64),
    visitor_id String,
    member_id String,
    http_version String,
    no_response UInt8,
    extra_keys Array(String),
    extra_values Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), host, event_id);

CREATE TABLE IF NOT EXISTS pageviews (
    event_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    visitor_id String,
    member_id String,
    session_id String,
    host String,
    path String,
    query String,
    method String,
    status UInt16,
    latency_ms Nullable(Float64),
    referrer String,
    referrer_host String,
    channel String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    browser String,
    os String,
    device String,
    is_bot UInt8,
    page_group String,
    section String,
    product_id String,
    category String,
    menu String,
    goal String,
    goal_value Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), host, event_id);

-- A session may be written again with more page views (e.g. closed at shutdown, then replayed):
-- the row with the latest `end` wins (FINAL / argMax(..., end)).
CREATE TABLE IF NOT EXISTS sessions (
    session_id String,
    visitor_id String,
    member_id String,
    start DateTime('UTC'),
    start_epoch Float64,
    `end` DateTime('UTC'),
    end_epoch Float64,
    duration Float64,
    pageviews UInt32,
    entry_page String,
    exit_page String,
    bounce UInt8,
    channel String,
    referrer_host String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    browser String,
    os String,
    device String,
    is_bot UInt8,
    close_reason String,
    goals UInt32,
    revenue Float64
) ENGINE = ReplacingMergeTree(`end`)
PARTITION BY toYYYYMM(start)
ORDER BY (toDate(start), session_id);

CREATE TABLE IF NOT EXISTS segments (
    member_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    segment String,
    previous_segment String,
    r UInt8,
    f UInt8,
    m UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (member_id, ts, segment);

-- Per-minute page views and visitors. Read with uniqExactMerge(pageviews), uniqExactMerge(visitors);
-- is_bot is part of the key so visitor counts can leave crawlers out.
-- (A modern server: uniqCombined64 states are ~100x smaller if approximate visitors are acceptable.)
CREATE TABLE IF NOT EXISTS pageviews_per_minute (
    minute DateTime('UTC'),
    host String,
    path String,
    is_bot UInt8,
    pageviews AggregateFunction(uniqExact, String),
    visitors AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, host, path, is_bot);

CREATE MATERIALIZED VIEW IF NOT EXISTS pageviews_per_minute_mv TO pageviews_per_minute AS
SELECT toStartOfMinute(ts) AS minute, host, path, is_bot,
       uniqExactState(event_id) AS pageviews, uniqExactState(visitor_id) AS visitors
FROM pageviews
GROUP BY minute, host, path, is_bot;

-- Per-minute hits by status class (0 = no response, 2 = 2xx, ... 5 = 5xx); errors = classes 0 and 5.
CREATE TABLE IF NOT EXISTS hits_per_minute (
    minute DateTime('UTC'),
    host String,
    status_class UInt8,
    hits AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, host, status_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS hits_per_minute_mv TO hits_per_minute AS
SELECT toStartOfMinute(ts) AS minute, host, toUInt8(intDiv(ifNull(status, 0), 100)) AS status_class,
       uniqExactState(event_id) AS hits
FROM hits
GROUP BY minute, host, status_class;

-- Per-minute latency histogram: bucket b holds latencies in (2^((b-1)/4), 2^(b/4)] ms (~19% wide).
-- Counting ids per bucket keeps it idempotent; a quantilesTDigestState column would weigh a
-- replayed hit twice. Quantiles are read by walking the cumulative counts (sinks/history_queries.py).
CREATE TABLE IF NOT EXISTS latency_per_minute (
    minute DateTime('UTC'),
    host String,
    bucket Int16,
    hits AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, host, bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_per_minute_mv TO latency_per_minute AS
SELECT toStartOfMinute(ts) AS minute, host,
       toInt16(ceil(log2(greatest(assumeNotNull(latency_ms), 0.001)) * 4)) AS bucket,
       uniqExactState(event_id) AS hits
FROM hits
WHERE latency_ms IS NOT NULL
GROUP BY minute, host, bucket;
