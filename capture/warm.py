"""Load (or compile, and cache) every numba kernel of capture, with the array types real runs pass.

numba compiles one specialisation per argument types: the Decoder's kernels for read-only buffers
(mmap'd files, the live ring) and writable ones (live copies), the pcap and pcapng indexers over a
read-only mmap (and their header readers called from Python), the live ring indexer over the
writable ring. A kernel left out here would compile on the first packets of a real run instead.
"""
from __future__ import annotations

import logging
import os
import struct
import tempfile

import numpy as np

from capture.testing import SYN, pcap_header, pcap_record, tcp_frame

# three SYNs (three flows): the file indexers walk record headers; the fast path follows the flows until
# capture.max_flows = 2 makes the decoder end the two older ones (down to 90% of the bound)
_FRAMES = [tcp_frame(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), port, 80, 1, SYN) for port in (40000, 40001, 40002)]


def warm_up() -> None:
    from capture.decoder import warm_up as warm_up_decoder

    warm_up_decoder()
    _warm_up_file_readers()
    _warm_up_live_ring()


def _pcap_bytes() -> bytes:
    return pcap_header() + b"".join(pcap_record(1.0, f) for f in _FRAMES)


def _pcapng_bytes() -> bytes:
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    # if_tsresol (code 9) = 6, then the end of options: the interface options are read by Python
    idb = struct.pack("<IIHHI", 1, 32, 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HHI", 0, 0, 32)
    epbs = b""
    for f in _FRAMES:
        data = f + b"\0" * (-len(f) % 4)
        epb_len = 32 + len(data)
        epbs += struct.pack("<IIIIIII", 6, epb_len, 0, 0, 1_000_000, len(f), len(f)) + data + \
            struct.pack("<I", epb_len)
    return shb + idb + epbs


def _warm_up_file_readers() -> None:
    """Each file kind read through a Decoder that ends flows beyond max_flows and expires the last: the
    bound and the expiry kernels run on the capture clock (a float), once a second of traffic."""
    from capture.decoder import Decoder
    from capture.pcapfile import read_pcap_batches
    from config.settings import Settings

    bound_log = logging.getLogger("capture.decoder")
    level = bound_log.level
    bound_log.setLevel(logging.ERROR)  # its "more than capture.max_flows" warning is the point here
    try:
        with tempfile.TemporaryDirectory(prefix="visitwire-warm-") as tmp:
            for name, data in (("warm.pcap", _pcap_bytes()), ("warm.pcapng", _pcapng_bytes())):
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(data)
                decoder = Decoder(Settings(capture={"ports": [80], "max_flows": 2}))
                frames = 0
                for batch in read_pcap_batches(path):
                    frames += len(batch)
                    decoder.feed_lines(batch)
                if frames != 3 or len(decoder.fast.fast_flows()) != 1 or decoder.stats["flows_evicted"] != 2:
                    raise RuntimeError(f"warm-up {name}: {frames} frames read, {decoder.stats['flows_evicted']} "
                                       "flows ended, expected 3 and 2 (the third followed by the fast path)")
                decoder.expire(1.5)  # the flow is neither idle nor waiting: checked and kept
                decoder.expire(1e9)  # idle: handed over and ended
                decoder.close()
    finally:
        bound_log.setLevel(level)


def _warm_up_live_ring() -> None:
    from capture.live import _index_block

    ring = np.zeros(1 << 12, np.uint8)  # a block header saying 0 packets
    _index_block(ring, 0, np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32),
                 np.empty(0, np.float64), 0, True, 1)
