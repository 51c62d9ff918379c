"""A batch of raw link-layer frames: what every packet source yields and the decoder eats.

Sources (pcap/pcapng files, the live socket ring) fill one contiguous uint8 buffer
and index it, so the numba decode kernel walks arrays instead of Python objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# libpcap LINKTYPE_* values we decode
LINKTYPE_NULL = 0          # BSD loopback (4-byte host-order address family)
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101         # raw IPv4/IPv6
LINKTYPE_LOOP = 108        # OpenBSD loopback (network-order family)
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229


@dataclass
class FrameBatch:
    buf: np.ndarray        # uint8, frames back to back (may be a read-only view of an mmap)
    offsets: np.ndarray    # int64, start of frame i in buf
    caplens: np.ndarray    # int32, captured bytes of frame i
    wirelens: np.ndarray   # int32, original length on the wire (may exceed caplen: truncated capture)
    ts: np.ndarray         # float64, epoch seconds UTC
    linktypes: np.ndarray  # int32, link type per frame (pcapng mixes interfaces)

    def __len__(self) -> int:
        return len(self.offsets)
