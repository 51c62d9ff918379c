-- visitwire analytics schema, version 0100 (processors/analytics/): visitor <-> member links,
-- co-visitation recommendations, and convenience views for ad-hoc `visitwire query`.
-- Portable subset (ClickHouse 18.16 and chdb): no CTEs, no window functions, explicit join strictness.

-- Member <-> visitor linking. A visitor id becomes linked to a member the first time one of its
-- page views carries that member_id (the login signal); all of that visitor id's page views,
-- including the anonymous ones before the login, then belong to the member's profile.
-- Filled by a materialized view on every pageviews insert; a replayed insert only adds a duplicate
-- (visitor_id, member_id) pair, so read it with DISTINCT / GROUP BY (min(first_ts) is exact).
CREATE TABLE IF NOT EXISTS visitor_member (
    visitor_id String,
    member_id String,
    first_ts Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (member_id, visitor_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS visitor_member_mv TO visitor_member AS
SELECT visitor_id, member_id, min(ts_epoch) AS first_ts
FROM pageviews
WHERE member_id != ''
GROUP BY visitor_id, member_id;

-- Links for page views written before this migration existed.
INSERT INTO visitor_member (visitor_id, member_id, first_ts)
SELECT visitor_id, member_id, min(ts_epoch) FROM pageviews WHERE member_id != '' GROUP BY visitor_id, member_id;

-- "Visitors who viewed X also viewed Y": one generation of pairs per refresh (computed_at);
-- readers take the latest generation (processors/analytics/recommendations.py).
CREATE TABLE IF NOT EXISTS recommendations (
    product_id String,
    recommended_id String,
    support UInt64,
    computed_at Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (product_id, computed_at, recommended_id);

-- Per-visitor summary over human page views (deduplicated by event_id): the full-history profile.
-- (A modern server would make this a refreshable materialized view.)
CREATE VIEW IF NOT EXISTS visitor_profiles AS
SELECT visitor_id, max(v_member) AS member_id, min(s_first) AS first_seen, max(s_last) AS last_seen,
       count() AS visits, sum(s_pageviews) AS pageviews, sum(s_last - s_first) AS total_time_s
FROM (
    SELECT visitor_id, session_id, max(member_id) AS v_member, min(ts_epoch) AS s_first, max(ts_epoch) AS s_last,
           count() AS s_pageviews
    FROM (SELECT DISTINCT event_id, visitor_id, member_id, session_id, ts_epoch FROM pageviews WHERE NOT is_bot)
    GROUP BY visitor_id, session_id
)
GROUP BY visitor_id;

-- Product usage over all time: views and unique visitors per product (human page views, deduplicated).
CREATE VIEW IF NOT EXISTS product_usage AS
SELECT product_id, max(category) AS category, count() AS views, uniqExact(visitor_id) AS visitors
FROM (SELECT DISTINCT event_id, product_id, category, visitor_id FROM pageviews WHERE product_id != '' AND NOT is_bot)
GROUP BY product_id;

-- Each member's latest RFM segment (history in `segments`, written by processors/analytics/rfm.py).
CREATE VIEW IF NOT EXISTS member_segments AS
SELECT member_id, argMax(segment, ts_epoch) AS segment, argMax(r, ts_epoch) AS r, argMax(f, ts_epoch) AS f,
       argMax(m, ts_epoch) AS m, max(ts_epoch) AS since
FROM segments
GROUP BY member_id;
