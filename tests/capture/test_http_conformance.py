"""Every connection of the odd-HTTP corpus (`http_corpus.py`) gives exactly its request rows, through the
numba fast path and the Python-only Decoder alike, and nothing of it is a parse error left unsaid."""
from __future__ import annotations

import pytest

from http_corpus import CASES
from pcaps import write

from capture.decoder import Decoder
from capture.pcapfile import read_pcap_batches
from config.settings import Settings


def decode(path) -> tuple[list[dict], dict]:
    out = []
    for fast in (True, False):
        d = Decoder(Settings(), fast_path=fast)
        events = []
        for b in read_pcap_batches(path):
            events += d.feed(b)
        events += d.close()
        out.append((events, d.stats))
    assert out[0][0] == out[1][0]
    return out[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rows_of_the_corpus(tmp_path, case):
    events, stats = decode(write(tmp_path / f"{case.name}.pcap", case.build().pkts))
    assert [(e["method"], e["host"], e["uri"], e["status"]) for e in events] == case.rows
    assert stats["requests"] == len(case.rows)
    # an answered request is never said to be unanswered; an unanswered one always is (a bare HTTP/0.9 answer
    # has no status, but it is an answer)
    assert all(not e["no_response"] for e in events if e["status"] is not None)
    assert all(e["no_response"] == (e["resp_bytes"] == 0) for e in events if e["status"] is None)
