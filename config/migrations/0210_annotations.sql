-- visitwire schema, version 0210: notes on the timeline ("newsletter sent"), POST /api/annotations.
-- Every change is a new version of the note (a deletion sets deleted); read the latest version of
-- each annotation_id: argMax(..., updated) (sinks/reads/annotations.py).
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id String,
    ts DateTime('UTC'),
    ts_epoch Float64,
    text String,
    deleted UInt8,
    updated Float64
) ENGINE = ReplacingMergeTree()
ORDER BY (annotation_id, updated);
