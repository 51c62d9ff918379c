"""Agreement on odd HTTP: visitwire and tshark against the corpus's expected request rows, in one run.

Every connection of tests/capture/http_corpus.py (0.9 requests and answers, CONNECT tunnels, 1xx / 101,
HEAD / 204 / 304, smuggling variants, desynchronised answers, capture gaps, ...) is written as a pcap;
visitwire's Decoder (fast path on, as `visitwire capture` runs) and tshark's HTTP dissector
(benchmarks/peers.py's way of running it, requests paired with final answers in order per TCP stream,
as a tshark-based extractor does) each give (method, host without port, uri, status) rows, scored as
rows matched of the expected N per case (a multiset match, so order does not count).

    .venv/bin/python benchmarks/conformance.py [--show-misses]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "capture"))  # the corpus and its scapy builder live with the tests

from http_corpus import CASES  # noqa: E402
from pcaps import write  # noqa: E402

from capture.decoder import Decoder  # noqa: E402
from capture.pcapfile import read_pcap_batches  # noqa: E402
from config.settings import Settings  # noqa: E402

SEP = "\x1e"  # tshark's aggregator between the occurrences of a field in one frame


def host_of(h: str) -> str:
    """A Host header value without its port, lower case (what visitwire's `host` holds)."""
    h = h.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def visitwire_rows(path: Path) -> list[tuple]:
    d = Decoder(Settings(), fast_path=True)
    events = []
    for b in read_pcap_batches(path):
        events += d.feed(b)
    events += d.close()
    return [(e["method"], e["host"], e["uri"], e["status"]) for e in events]


def tshark_rows(path: Path, server_port: int) -> list[tuple]:
    argv = ["tshark", "-n", "-r", str(path), "-d", f"tcp.port=={server_port},http", "-Y",
            "http.request || http.response", "-T", "fields", "-E", "occurrence=a", "-E", f"aggregator={SEP}"]
    for f in ("tcp.stream", "http.request.method", "http.request.uri", "http.host", "http.response.code"):
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, check=True).stdout.decode("utf-8", "replace")
    streams: dict[str, tuple[list, list]] = {}
    for line in out.split("\n"):  # not splitlines(): it splits at the \x1e aggregator too
        if not line:
            continue
        stream, methods, uris, hosts, codes = (line.split("\t") + [""] * 5)[:5]
        reqs, answers = streams.setdefault(stream, ([], []))
        if methods:
            m, u, h = methods.split(SEP), uris.split(SEP), hosts.split(SEP)
            if len(h) != len(m):  # a request without Host among them: the occurrences do not line up
                h = [""] * len(m)
            reqs += [[mm, host_of(hh), uu, None] for mm, uu, hh in zip(m, u, h)]
        if codes:
            answers += [int(c) for c in codes.split(SEP) if c.isdigit() and not 100 <= int(c) < 200 or c == "101"]
    rows = []
    for reqs, answers in streams.values():
        for r, code in zip(reqs, answers):
            r[3] = code
        rows += [tuple(r) for r in reqs]
    return rows


def matched(expected: list[tuple], got: list[tuple]) -> int:
    return sum((Counter(expected) & Counter(got)).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--show-misses", action="store_true", help="print each case's rows where a tool differs")
    args = ap.parse_args()
    total = 0
    score = {"visitwire": 0, "tshark": 0}
    extra = {"visitwire": 0, "tshark": 0}
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        for case in CASES:
            path = write(Path(tmp) / f"{case.name}.pcap", case.build().pkts)
            total += len(case.rows)
            for tool, rows in (("visitwire", visitwire_rows(path)), ("tshark", tshark_rows(path, case.server_port))):
                k = matched(case.rows, rows)
                score[tool] += k
                extra[tool] += len(rows) - k
                if args.show_misses and (k < len(case.rows) or len(rows) > k):
                    print(f"{tool:9} {case.name}: expected {case.rows}\n{'':9} got {rows}")
    print(f"odd-HTTP corpus: {len(CASES)} connections, {total} request rows (method, host, uri, status)")
    for tool in ("visitwire", "tshark"):
        print(f"  {tool:9} {score[tool]:3d} / {total} rows matched ({100 * score[tool] / total:.1f}%), "
              f"{extra[tool]} rows more or different")
    print(f"  visitwire - tshark: {score['visitwire'] - score['tshark']:+d} rows")


if __name__ == "__main__":
    main()
