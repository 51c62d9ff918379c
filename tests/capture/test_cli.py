"""`visitwire capture --pcap FILE --format jsonl` as a user runs it (a subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson


from pcaps import Conv, req, resp, udp_packet, write  # noqa: E402

from config.events import HIT_FIELD_NAMES  # noqa: E402

VISITWIRE = str(Path(sys.executable).with_name("visitwire"))


def visitwire(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    e.update(env or {})
    return subprocess.run([VISITWIRE, *args], capture_output=True, timeout=120, env=e)


def test_capture_pcap_prints_json_lines_and_a_summary(tmp_path):
    c = Conv().handshake()
    c.request(req("/product/7?password=pw1", headers={"Cookie": "_vw_id=RAWCOOKIE"}))
    c.tick(0.012).response(resp(200, b"p" * 1500), sizes=[1000])
    c.tick().request(req("/cart"))
    c.tick(0.003).response(resp(302, b""))
    c.tick().request(req("/never-answered"))
    c.tick().close()
    path = write(tmp_path / "visits.pcap", c.pkts + [udp_packet(c.t)])
    r = visitwire("capture", "--pcap", path, "--format", "jsonl")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    events = [orjson.loads(x) for x in lines]
    assert [tuple(e) for e in events] == [HIT_FIELD_NAMES] * 3
    assert [(e["uri"], e["status"], e["resp_bytes"], e["latency_ms"]) for e in events] == [
        ("/product/7", 200, 1500, 12.0), ("/cart", 302, 0, 3.0), ("/never-answered", None, 0, None)]
    assert events[2]["no_response"] is True
    assert b"RAWCOOKIE" not in r.stdout and b"pw1" not in r.stdout
    err = r.stderr.decode()
    assert "transactions 3" in err and "flows 1" in err and "parse errors 0" in err
    assert "non-tcp packets 1" in err and "drops:" in err
    assert "Traceback" not in err


def test_ports_option_selects_the_server_side(tmp_path):
    c = Conv(client=("10.0.0.1", 8000), server=("10.0.0.2", 9000))  # picked up mid-connection
    c.request(req("/x"))
    c.tick(0.001).response(resp(200, b"ok"))
    path = write(tmp_path / "p.pcap", c.pkts)
    r = visitwire("capture", "--pcap", path, "--ports", "9000")
    events = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(e["server_port"], e["client_port"], e["status"]) for e in events] == [(9000, 8000, 200)]


def test_not_a_pcap_is_a_clear_error_with_exit_code_2(tmp_path):
    bad = tmp_path / "report.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    r = visitwire("capture", "--pcap", str(bad))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "not a pcap or pcapng capture" in err and "Traceback" not in err
    assert r.stdout == b""
    r = visitwire("capture", "--pcap", str(tmp_path / "missing.pcap"))
    assert r.returncode == 2 and "no such file" in r.stderr.decode().lower()  # "(No such file or directory)"


def test_a_file_that_is_not_a_capture_is_refused_before_any_kernel_compiles(tmp_path, monkeypatch):
    # a stale kernel cache compiles for a minute or more; the file's header is known at once
    from typer.testing import CliRunner

    import engine.kernel_cache as kc
    from engine.cli import app

    compiled = []
    monkeypatch.setattr(kc, "stale", lambda rooms=kc.ROOMS: kc.Staleness(("capture",), "no kernel cache yet", 90.0))
    monkeypatch.setattr(kc, "compile_all", lambda *args, **kw: compiled.append(args))
    bad = tmp_path / "report.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    r = CliRunner().invoke(app, ["capture", "--pcap", str(bad)])
    assert r.exit_code == 2 and "not a pcap or pcapng capture" in r.output, r.output
    assert compiled == []


def test_file_cut_short_still_gives_events_and_says_so(tmp_path):
    c = Conv().handshake()
    c.request(req("/a"))
    c.tick(0.001).response(resp(200, b"x" * 50))
    c.tick().request(req("/b"))
    path = write(tmp_path / "cut.pcap", c.pkts)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-10])
    r = visitwire("capture", "--pcap", path)
    assert r.returncode == 0
    assert [orjson.loads(x)["uri"] for x in r.stdout.splitlines()] == ["/a"]
    assert "ends mid-record" in r.stderr.decode()


def test_capture_to_kafka_with_no_broker_says_how_many_were_lost_and_fails(tmp_path):
    from engine.services import free_port

    c = Conv().handshake()
    for i in range(5):
        c.tick().request(req(f"/p{i}"))
        c.tick(0.002).response(resp(200, b"ok"))
    c.tick().close()
    path = write(tmp_path / "five.pcap", c.pkts)
    r = visitwire("capture", "--pcap", path, "--kafka", f"127.0.0.1:{free_port()}",
                  env={"VISITWIRE_DATA_DIR": str(tmp_path / "data")})
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "5 event(s) not delivered to Kafka" in err and "0 delivered" in err
    assert "Traceback" not in err
