"""The `visitwire` command line.

Each command only parses flags, builds the one Settings object and hands over to
the room that does the work (imported lazily so `visitwire --help` is instant).
"""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="visitwire: real-time visitor analytics from the wire.")
db_app = typer.Typer(no_args_is_help=True, help="History store (ClickHouse / chdb) administration.")
app.add_typer(db_app, name="db")

_state: dict = {"config": None}


def settings(**overrides):
    """Load settings, print a readable message and exit 2 on bad configuration."""
    from config.settings import SettingsError, load_settings

    try:
        s = load_settings(_state["config"], **{k: v for k, v in overrides.items() if v})
    except SettingsError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2)
    from config.logs import configure_logging

    configure_logging(s.log_level, s.log_format)
    return s


def _ports(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"--ports takes comma-separated numbers, e.g. 80,8080 (got {value!r})")


def _section(**values) -> dict:
    return {k: v for k, v in values.items() if v not in (None, "", [])}


@app.callback()
def main_options(config: Optional[str] = typer.Option(None, "--config", "-c", help="TOML settings file.")):
    _state["config"] = config


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    none = "none"


@app.command()
def capture(
    iface: Optional[str] = typer.Option(None, help="Capture live on this interface (needs root / CAP_NET_RAW)."),
    ports: Optional[str] = typer.Option(None, help="Comma-separated server ports, e.g. 80,8080."),
    pcap: Optional[str] = typer.Option(None, help="Read a pcap / pcapng file instead of a live interface."),
    format: OutputFormat = typer.Option(OutputFormat.jsonl, "--format", help="Events to stdout as JSON lines."),
    kafka: Optional[str] = typer.Option(None, help="Publish events to visitwire.hits on this bootstrap server."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port (metrics.port)."),
):
    """Packets -> HTTP visit events (JSON lines on stdout and/or Kafka)."""
    if not iface and not pcap:
        raise typer.BadParameter("give --pcap FILE or --iface IFACE")
    s = settings(capture=_section(iface=iface, ports=_ports(ports)), kafka=_section(bootstrap=kafka),
                 metrics=_section(port=metrics_port))
    if pcap:  # before a stale kernel cache compiles for a minute or more: /etc/passwd took 81 s to be refused
        from capture.capture_file import CaptureFileError, check_capture_file

        try:
            check_capture_file(pcap)
        except CaptureFileError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    from engine.kernel_cache import aot_line, compile_all, every, stale

    without_aot = aot_line()  # the ahead-of-time build cannot be used: numba's cache stands in
    if without_aot:
        typer.secho(without_aot, fg="yellow", err=True)
    compiling = stale(("capture",))
    if compiling is not None:  # said before the wait (with progress), and recorded for the next start
        typer.secho(compiling.line(), fg="yellow", err=True)
        compile_all(("capture",), say=every(5.0, lambda text: typer.echo(text, err=True)))
    from engine.capture_cmd import run_capture

    raise typer.Exit(run_capture(s, pcap=pcap, iface=iface, jsonl=(format == OutputFormat.jsonl and not kafka),
                                 kafka=bool(kafka)))


@app.command()
def run(
    iface: Optional[str] = typer.Option(None, help="Capture live on this interface."),
    ports: Optional[str] = typer.Option(None, help="Comma-separated server ports."),
    pcap: Optional[str] = typer.Option(None, help="Process this capture file, flush, print a summary and exit."),
    kafka: Optional[str] = typer.Option(None, help="Use this Kafka instead of the embedded tansu broker."),
    redis: Optional[str] = typer.Option(None, help="Use this Redis (redis://...) instead of an embedded one."),
    clickhouse: Optional[str] = typer.Option(None, help="History store URL (clickhouse://... or chdb:///path)."),
    web_port: Optional[int] = typer.Option(None, help="Dashboard / API port."),
):
    """The embedded runtime: broker, Redis, history store, capture, processors and dashboard on one machine."""
    s = settings(capture=_section(iface=iface, ports=_ports(ports)), kafka=_section(bootstrap=kafka),
                 redis=_section(url=redis), history=_section(url=clickhouse), web=_section(port=web_port))
    from engine.runtime import run_embedded

    raise typer.Exit(run_embedded(s, pcap=pcap))


@app.command()
def worker(
    kafka: Optional[str] = typer.Option(
        None, help="Kafka bootstrap servers (required: workers scale out on a shared broker)."),
    redis: Optional[str] = typer.Option(None, help="Redis URL."),
    clickhouse: Optional[str] = typer.Option(None, help="History store URL."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port (metrics.port)."),
):
    """A Faust worker alone; several in one consumer group split the partitions."""
    s = settings(kafka=_section(bootstrap=kafka), redis=_section(url=redis), history=_section(url=clickhouse),
                 metrics=_section(port=metrics_port))
    if not s.kafka.bootstrap or not s.redis.url:
        typer.secho("visitwire worker needs --kafka and --redis (or kafka.bootstrap / redis.url in the config)",
                    fg="red", err=True)
        raise typer.Exit(2)
    from engine.worker_cmd import run_worker

    raise typer.Exit(run_worker(s))


@app.command()
def demo(
    duration: float = typer.Option(0, help="Stop after this many seconds (0 = until Ctrl-C)."),
    visitors: int = typer.Option(60, help="Simulated visitors in the crowd."),
    seed: int = typer.Option(7, help="Random seed of the crowd."),
    web_port: Optional[int] = typer.Option(None, help="Dashboard port."),
    truth: Optional[str] = typer.Option(None, help="Append the shop's own log of every request (JSON lines: "
                                                   "visitor cookie, member, order items, bot) to this file."),
):
    """A local web shop, a crowd of simulated visitors, live capture on loopback and the whole pipeline."""
    s = settings(web=_section(port=web_port))
    from engine.demo import run_demo

    raise typer.Exit(run_demo(s, duration=duration, visitors=visitors, seed=seed, truth=truth))


@app.command("compile")
def compile_kernels():
    """Compile and cache every numba kernel for this machine (set-up runs it; later starts load the cache)."""
    from engine.kernel_cache import compile_or_check

    raise typer.Exit(compile_or_check())


@db_app.command("init")
def db_init(clickhouse: Optional[str] = typer.Option(None, help="History store URL.")):
    """Create / migrate the history schema (idempotent)."""
    s = settings(history=_section(url=clickhouse))
    from sinks.base import HistoryError, SinkUnavailable
    from sinks.history import open_history

    try:
        store = open_history(s.history.url)
        try:
            applied = store.init_schema()
        finally:
            store.close()
    except (HistoryError, SinkUnavailable) as e:
        typer.secho(f"visitwire db init: {e}", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"schema up to date ({len(applied)} migration(s) applied: {', '.join(applied) or 'none'})")


@app.command()
def web(redis: Optional[str] = typer.Option(None, help="Redis URL (live state)."),
        clickhouse: Optional[str] = typer.Option(None, help="History store URL."),
        web_port: Optional[int] = typer.Option(None, help="Screen / API port.")):
    """The live screen and JSON API alone, on a Redis and history store that workers elsewhere fill."""
    s = settings(redis=_section(url=redis), history=_section(url=clickhouse), web=_section(port=web_port))
    if not s.redis.url:
        typer.secho("visitwire web needs --redis (or redis.url in the config)", fg="red", err=True)
        raise typer.Exit(2)
    from engine.web_cmd import run_web

    raise typer.Exit(run_web(s))


@app.command()
def status(target: Optional[list[str]] = typer.Option(None, "--target", help="A worker's or capture agent's "
                                                      "metrics listener, e.g. http://10.0.0.7:9187 (repeatable; "
                                                      "adds to metrics.targets)."),
           kafka: Optional[str] = typer.Option(None, help="Kafka bootstrap servers."),
           redis: Optional[str] = typer.Option(None, help="Redis URL."),
           clickhouse: Optional[str] = typer.Option(None, help="History store URL."),
           max_lag: int = typer.Option(0, help="Unhealthy when a hits partition lags more (0 = lag is only shown)."),
           json_out: bool = typer.Option(False, "--json", help="JSON output.")):
    """Health of every component (reachable, lag, last flush, last error); exits 1 when one is unhealthy."""
    s = settings(kafka=_section(bootstrap=kafka), redis=_section(url=redis), history=_section(url=clickhouse))
    from engine.status import run_status

    raise typer.Exit(run_status(s, targets=[*s.metrics.targets, *(target or [])], max_lag=max_lag,
                                as_json=json_out))


@app.command()
def query(sql: str = typer.Argument(..., help="SQL to run on the history store."),
          clickhouse: Optional[str] = typer.Option(None, help="History store URL."),
          unsafe: bool = typer.Option(False, "--unsafe", help="Run any statement (DDL, writes, table functions) "
                                      "directly on the store, without the read-only rules and limits of the API.")):
    """Run one SELECT over visitwire's tables (through the running engine when one holds chdb); print JSON rows."""
    s = settings(history=_section(url=clickhouse))
    from engine.query import run_query

    raise typer.Exit(run_query(s, sql, unsafe=unsafe))


class ReportKind(str, Enum):
    visitors = "visitors"
    products = "products"
    funnels = "funnels"
    segments = "segments"
    recommendations = "recommendations"
    cohorts = "cohorts"


@app.command()
def report(kind: ReportKind,
           since: Optional[str] = typer.Option(None, "--from", help="Start (ISO date/time or epoch)."),
           until: Optional[str] = typer.Option(None, "--to", help="End (ISO date/time or epoch)."),
           json_out: bool = typer.Option(False, "--json", help="JSON output."),
           csv_out: bool = typer.Option(False, "--csv", help="CSV output."),
           limit: int = typer.Option(20, help="Rows to show."),
           clickhouse: Optional[str] = typer.Option(None, help="History store URL.")):
    """Visitor relationship reports: visitors, products, funnels, segments, recommendations, cohorts."""
    s = settings(history=_section(url=clickhouse))
    from engine.report import run_report

    raise typer.Exit(run_report(s, kind.value, since=since, until=until,
                                fmt="json" if json_out else "csv" if csv_out else "table", limit=limit))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
