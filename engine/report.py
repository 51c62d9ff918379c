"""`visitwire report KIND`: visitor relationship reports as rich tables, JSON or CSV.

The reports themselves are built in sinks/reads/reports.py. Like `visitwire
query`, a chdb store held by a running engine is read through its `POST /api/query`
(chdb serves a data directory to one process only); ClickHouse is read directly.
"""
from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

from engine.query import QueryError, engine_info, query_engine
from sinks.reads.common import AnalyticsError, TimeRange
from sinks.reads.reports import Report, build_report
from sinks.base import HistoryError, SinkUnavailable
from sinks.history import open_history
from sinks.sql_bind import bind

# Columns holding epoch seconds are shown as UTC date-times in tables.
TIME_COLUMNS = {"first_seen", "last_seen", "since", "ts", "at"}


class EngineHistory:
    """Read-only store that sends the SQL to the running engine which holds the chdb directory."""

    def __init__(self, info: dict):
        self.info = info

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        return query_engine(self.info, bind(sql, params))

    def close(self) -> None:
        pass


def open_reader(settings: Any):
    url = settings.history.url
    if url.startswith("chdb://"):
        info = engine_info(settings.data_dir, url)
        if info:
            return EngineHistory(info)
    return open_history(url)


def run_report(settings: Any, kind: str, since: str | None = None, until: str | None = None, fmt: str = "table",
               limit: int = 20) -> int:
    """Print one report; 0 on success, 2 with a message saying what to fix on bad input or no store."""
    try:
        rng = TimeRange.parse(since, until)
        if limit <= 0:
            raise AnalyticsError(f"--limit must be a positive number of rows (got {limit})")
        store = open_reader(settings)
    except (AnalyticsError, HistoryError) as e:
        print(f"visitwire report: {e}", file=sys.stderr)
        return 2
    try:
        if fmt == "table":
            from rich.console import Console

            with Console(stderr=True).status(f"computing the {kind} report ..."):
                report = build_report(store, settings, kind, rng, limit)
        else:
            report = build_report(store, settings, kind, rng, limit)
    except (AnalyticsError, HistoryError, SinkUnavailable, QueryError) as e:
        print(f"visitwire report: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2) + b"\n")
    elif fmt == "csv":
        write_csv(report)
    else:
        print_tables(report)
    sys.stdout.flush()
    return 0


def write_csv(report: Report) -> None:
    """The main table only, with a header row (other sections are in --json)."""
    main = report.sections[0]
    w = csv.DictWriter(sys.stdout, fieldnames=main.columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in main.rows:
        w.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(v: Any) -> Any:
    return ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def _cell(column: str, v: Any) -> str:
    if v is None:
        return "-"
    if column in TIME_COLUMNS and isinstance(v, (int, float)):
        return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%d %H:%M")
    if isinstance(v, float):
        if "rate" in column or "share" in column or (column.startswith("w") and column[1:].isdigit()):
            return f"{v * 100:.0f}%" if column.startswith("w") else f"{v * 100:.1f}%"
        return f"{v:,.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def print_tables(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output is not cut to 80 columns: reports are wide, let the reader's viewer wrap.
    console = Console(width=None if sys.stdout.isatty() else 200)
    span = " .. ".join(_cell("ts", t) if t is not None else "open" for t in (report.rng.since, report.rng.until))
    console.print(f"[bold]visitwire report {report.kind}[/bold]  ({span})")
    for s in report.sections:
        if not s.columns:
            console.print(f"[bold]{s.title}[/bold]: no data in this range")
            continue
        table = Table(title=s.title, title_justify="left", header_style="bold cyan")
        for c in s.columns:
            table.add_column(c, justify="left" if c in ("segment", "funnel", "pattern", "cohort") or c.endswith("_id")
                             or c in ("from", "to", "device", "channel", "category") else "right")
        for row in s.rows:
            table.add_row(*[_cell(c, row.get(c)) for c in s.columns])
        if not s.rows:
            table.caption = "no data in this range"
        console.print(table)
