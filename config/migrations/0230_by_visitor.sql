-- visitwire schema, version 0230: copies of the page view and hit columns that one member's or one visitor's
-- reads use (profile, activity: sinks/reads/profiles.py, customers.py, members.py), sorted by visitor id, so
-- `visitor_id IN (...)` reads a few granules instead of every row (pageviews is sorted by day, host,
-- event_id; ClickHouse 18.16 has no skipping index). At 10M page views a member's profile read the whole
-- table in each of its queries (2.8 s p50 on chdb, 18.6 s on the server: benchmarks/customers_bench.py).
-- Portable subset (ClickHouse 18.16 and chdb). Filled by materialized views on every insert; like the
-- source tables they are ReplacingMergeTree on event_id and read with DISTINCT.

CREATE TABLE IF NOT EXISTS pageviews_by_visitor (
    visitor_id String,
    event_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    member_id String,
    session_id String,
    host String,
    path String,
    is_bot UInt8,
    section String,
    device String,
    channel String,
    product_id String,
    category String,
    menu String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (visitor_id, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS pageviews_by_visitor_mv TO pageviews_by_visitor AS
SELECT visitor_id, event_id, ts, ts_epoch, member_id, session_id, host, path, is_bot, section, device, channel,
       product_id, category, menu
FROM pageviews;

-- Every column a goal rule reads (sinks/reads/goal_events.py: path, method, status, query, the body fields).
CREATE TABLE IF NOT EXISTS hits_by_visitor (
    visitor_id String,
    event_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    member_id String,
    host String,
    method String,
    path String,
    query String,
    status Nullable(UInt16),
    extra_keys Array(String),
    extra_values Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (visitor_id, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS hits_by_visitor_mv TO hits_by_visitor AS
SELECT visitor_id, event_id, ts, ts_epoch, member_id, host, method, path, query, status, extra_keys, extra_values
FROM hits;

-- The visitor ids each member was seen on, in a page view or any other request (visitor_member has the page
-- views' only; a member's goal can be carried by a request that is not a page view): the ids to read.
CREATE TABLE IF NOT EXISTS member_visitor_ids (
    member_id String,
    visitor_id String
) ENGINE = ReplacingMergeTree()
ORDER BY (member_id, visitor_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS member_visitor_ids_pageviews_mv TO member_visitor_ids AS
SELECT DISTINCT member_id, visitor_id FROM pageviews WHERE member_id != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS member_visitor_ids_hits_mv TO member_visitor_ids AS
SELECT DISTINCT member_id, visitor_id FROM hits WHERE member_id != '';

-- The rows written before this migration. INSERT ... SELECT streams in blocks (max_insert_block_size), so the
-- server's memory holds one block, not the table. Run twice (an interrupted migration), it only adds
-- duplicates that every read removes (DISTINCT on event_id) and merges collapse.
INSERT INTO pageviews_by_visitor (visitor_id, event_id, ts, ts_epoch, member_id, session_id, host, path, is_bot,
                                  section, device, channel, product_id, category, menu)
SELECT visitor_id, event_id, ts, ts_epoch, member_id, session_id, host, path, is_bot, section, device, channel,
       product_id, category, menu
FROM pageviews;

INSERT INTO hits_by_visitor (visitor_id, event_id, ts, ts_epoch, member_id, host, method, path, query, status,
                             extra_keys, extra_values)
SELECT visitor_id, event_id, ts, ts_epoch, member_id, host, method, path, query, status, extra_keys, extra_values
FROM hits;

INSERT INTO member_visitor_ids (member_id, visitor_id)
SELECT DISTINCT member_id, visitor_id FROM pageviews WHERE member_id != '';

INSERT INTO member_visitor_ids (member_id, visitor_id)
SELECT DISTINCT member_id, visitor_id FROM hits WHERE member_id != '';
