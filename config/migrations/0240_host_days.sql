-- visitwire schema, version 0240: each site's (host's) page views, hits and errors per UTC day
-- (sinks/reads/host_days.py), so the Site list (/api/stats?by=host over 90 days) reads ~90 rows a host instead of
-- every page view: at 10M page views the raw scan took 6.5 s on chdb and 16.5 s on the 18.16 server.
-- Portable subset (ClickHouse 18.16 and chdb): days are whole days since 1970 (UInt32), no Date arithmetic.
--
-- Why not a rollup kept by a materialized view: a view sees one insert at a time, so it cannot know that a row is
-- a replay of one stored before; an exact one must hold uniqExact states of the event ids, and merging 90 days of
-- them took 3.0 s on the 18.16 server (1.0 s on chdb) at 10M page views. Instead a day is computed once from the
-- raw rows with the stats API's own SQL and stamped with the rows inserted into that day (day_rows, migration
-- 0220, kept by views): a later insert into the day moves the stamp and the day is computed again. The days of
-- an existing history are computed at the first read, like member_days (one query over 90 days of 10M rows
-- needs more memory than the server's limit), so there is nothing to copy here.

-- A site's figures over one day as they were at `stamp`; rows of another stamp are stale and never read.
CREATE TABLE IF NOT EXISTS host_days (
    day UInt32,
    stamp String,
    host String,
    pageviews UInt64,
    hits UInt64,
    errors UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (day, stamp, host);

-- The (day, stamp) pairs whose host_days rows are complete.
CREATE TABLE IF NOT EXISTS host_days_done (
    day UInt32,
    stamp String,
    computed_at Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (day, stamp);
