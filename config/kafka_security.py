"""One Kafka security set-up (settings.kafka) in the words of each client library visitwire uses:
librdkafka (hits reader, outbox, lag probe), aiokafka (capture output, topic creation) and Faust.
PLAINTEXT gives nothing extra, so the default path is the clients' own default."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def librdkafka_config(k: Any) -> dict[str, Any]:
    if k.security_protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security.protocol": k.security_protocol.lower()}
    if k.security_protocol.startswith("SASL"):
        out.update({"sasl.mechanisms": k.sasl_mechanism, "sasl.username": k.sasl_username,
                    "sasl.password": k.sasl_password})
    if k.security_protocol.endswith("SSL"):
        if k.ssl_cafile:
            out["ssl.ca.location"] = k.ssl_cafile
        if k.ssl_certfile:
            out.update({"ssl.certificate.location": k.ssl_certfile, "ssl.key.location": k.ssl_keyfile})
    return out


def security_hint(k: Any) -> str:
    """What to check besides the address when a broker will not take a client: "" in plain text, else the
    security settings (a SASL broker refusing the credentials looks like one that is away to the clients).
    k: settings.kafka, or the aiokafka arguments aiokafka_kwargs made of it (the capture agent keeps those)."""
    if isinstance(k, dict):
        k = SimpleNamespace(security_protocol=k.get("security_protocol", "PLAINTEXT"),
                            sasl_mechanism=k.get("sasl_mechanism", ""))
    if k.security_protocol == "PLAINTEXT":
        return ""
    hint = f", and kafka.security_protocol ({k.security_protocol})"
    if k.security_protocol.startswith("SASL"):
        hint += f" with kafka.sasl_mechanism ({k.sasl_mechanism}), sasl_username and sasl_password_file"
    return hint


def ssl_context(k: Any):
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(cafile=k.ssl_cafile or None, certfile=k.ssl_certfile or None,
                              keyfile=k.ssl_keyfile or None)


def aiokafka_kwargs(k: Any) -> dict[str, Any]:
    if k.security_protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol.startswith("SASL"):
        out.update({"sasl_mechanism": k.sasl_mechanism, "sasl_plain_username": k.sasl_username,
                    "sasl_plain_password": k.sasl_password})
    if k.security_protocol.endswith("SSL"):
        out["ssl_context"] = ssl_context(k)
    return out


def faust_credentials(k: Any):
    """broker_credentials for faust.App (None for PLAINTEXT)."""
    if k.security_protocol == "PLAINTEXT":
        return None
    import faust

    context = ssl_context(k) if k.security_protocol.endswith("SSL") else None
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password, ssl_context=context,
                                     mechanism=k.sasl_mechanism)
    return faust.SSLCredentials(context)
