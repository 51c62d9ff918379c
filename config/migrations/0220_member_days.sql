-- visitwire schema, version 0220: each member's figures per closed UTC day (sinks/reads/member_days.py), so the
-- Customers list and RFM read a small table instead of every page view and goal request of the history.
-- Portable subset (ClickHouse 18.16 and chdb): days are whole days since 1970 (UInt32), no Date arithmetic.

-- Rows every insert adds to pageviews and hits, per UTC day. A replayed insert adds too and a merge never
-- changes it, so a day's count moves whenever its data may have: the day's member figures are then stale.
CREATE TABLE IF NOT EXISTS day_rows (
    source String,
    day UInt32,
    rows UInt64
) ENGINE = SummingMergeTree()
ORDER BY (source, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS day_rows_pageviews_mv TO day_rows AS
SELECT 'pageviews' AS source, toUInt32(intDiv(toUInt32(ts), 86400)) AS day, count() AS rows
FROM pageviews
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS day_rows_hits_mv TO day_rows AS
SELECT 'hits' AS source, toUInt32(intDiv(toUInt32(ts), 86400)) AS day, count() AS rows
FROM hits
GROUP BY day;

-- The rows written before this migration (run twice, it only counts them twice: the figures are computed again).
INSERT INTO day_rows (source, day, rows)
SELECT 'pageviews', toUInt32(intDiv(toUInt32(ts), 86400)) AS day, count() FROM pageviews GROUP BY day;

INSERT INTO day_rows (source, day, rows)
SELECT 'hits', toUInt32(intDiv(toUInt32(ts), 86400)) AS day, count() FROM hits GROUP BY day;

-- A member's figures over one closed day, computed from that day's data as it was at `stamp` (the day's
-- day_rows counts and the goal rules): rows of another stamp are stale and never read. `visits` started on
-- the day, `carried` started the day before and went on past midnight into it.
CREATE TABLE IF NOT EXISTS member_days (
    day UInt32,
    stamp String,
    member_id String,
    first_seen Float64,
    last_seen Float64,
    visits UInt64,
    carried UInt64,
    orders UInt64,
    revenue Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (day, stamp, member_id);

-- The (day, stamp) pairs whose member_days rows are complete.
CREATE TABLE IF NOT EXISTS member_days_done (
    day UInt32,
    stamp String,
    computed_at Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (day, stamp);
