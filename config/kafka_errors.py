"""librdkafka's error reports (`error_cb`) for the clients visitwire makes with it: the hits reader, the outbox,
the lag probe of `visitwire status` and the watchdog's broker watch.

Without an error_cb, confluent-kafka 2.16.2 drops librdkafka's error reports, and a broker that refuses the
client's SASL login looks like one that is away: the consumer reads nothing, a metadata call fails with
"Broker transport failure", the producer's records wait (measured against tests/engine/sasl_gateway.py with a
wrong password). With one, each report comes with its code: _AUTHENTICATION for a refused login, _SSL for a
TLS handshake that failed, _TRANSPORT for a connection refused or lost (a plain-text client on the tests' TLS
listener got no report at all: the callers' lines name kafka.security_protocol for it). Each is
counted by kind, the first of each kind logged as one line (any URL password masked; librdkafka's own log lines
of each retry go through config/kafka_log_flood.py as before); a refusal is kept, so the client can say it in
the project's one line instead of "broker away".
"""
from __future__ import annotations

import collections
import logging

from config.redact import redact_text

log = logging.getLogger(__name__)

# librdkafka error names that mean "the broker will not take this client as configured", and how to say it
REFUSALS = {"_AUTHENTICATION": "refused the SASL login", "_SSL": "failed the TLS handshake"}


class ClientErrors:
    """The error_cb of one librdkafka client (`{"error_cb": ClientErrors(...)}` in its config). `logs`: False
    for a probe that says the outcome itself (visitwire status)."""

    def __init__(self, client: str, logs: bool = True):
        self.client = client
        self.logs = logs
        self.counts: collections.Counter[str] = collections.Counter()
        self.refusal = ""   # the latest refusal, e.g. "refused the SASL login (... Authentication failed ...)"
        self.latest = ""    # the latest report of any kind, in librdkafka's words

    def __call__(self, error) -> None:
        # in the thread that runs the client's poll / consume / flush; must not raise (it would stop that call)
        name, reason = error.name(), redact_text(error.str())
        self.counts[name] += 1
        if name != "_ALL_BROKERS_DOWN":  # a summary of the others ("1/1 brokers are down"); they say why
            self.latest = f"{name}: {reason}"
        if name in REFUSALS:
            self.refusal = f"{REFUSALS[name]} ({reason})"
        if self.logs and self.counts[name] == 1 and name != "_ALL_BROKERS_DOWN":  # every retry is reported (15-40/s)
            log.warning("Kafka client error in the %s: %s: %s (further %s reports are counted)", self.client, name,
                        reason, name)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """"" when nothing was reported, else e.g. "Kafka client errors in the outbox: _AUTHENTICATION 212"."""
        kinds = ", ".join(f"{name} {n:,}" for name, n in self.counts.most_common())
        return f"Kafka client errors in the {self.client}: {kinds}" if kinds else ""

    def take_refusal(self) -> str:
        """The refusal reported since the last call ("" if none), forgotten once taken."""
        refusal, self.refusal = self.refusal, ""
        return refusal


class KafkaRefused(Exception):
    """A broker refused a client's SASL login or TLS handshake: retrying cannot help until the settings (or the
    broker's users) change, so the worker stops with one line instead of waiting as for a broker away."""
