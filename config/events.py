"""The event types every room shares: one definition per Kafka topic.

Each record travels as a JSON object (orjson) whose keys are exactly the field
names below. The same field lists generate the topics' JSON Schemas
(`config/schema/*.json`, see `write_json_schemas`) so downstream services and
our code cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

TOPIC_HITS = "visitwire.hits"
TOPIC_PAGEVIEWS = "visitwire.pageviews"
TOPIC_SESSIONS = "visitwire.sessions"
TOPIC_SEGMENTS = "visitwire.segments"


@dataclass(frozen=True)
class Field:
    name: str
    json_type: str | list[str]  # JSON Schema type(s)
    doc: str


HIT_FIELDS: tuple[Field, ...] = (
    Field("event_id", "string", "Deterministic id of the transaction (hex); same packets -> same id, so sinks are idempotent."),
    Field("ts", "number", "Request start, epoch seconds UTC (float, microsecond precision)."),
    Field("client_ip", "string", "Client address: the packet's source, or, for a request from a trusted proxy (capture.trusted_proxies), the right-most address of its Forwarded / X-Forwarded-For / X-Real-IP header that is not a trusted proxy."),
    Field("client_port", "integer", "Client TCP port."),
    Field("server_ip", "string", "Server address."),
    Field("server_port", "integer", "Server TCP port."),
    Field("method", "string", "HTTP method as on the wire (GET, POST, ...)."),
    Field("host", "string", "Host header (the last one when repeated), lower-cased, without the port (that is server_port; IPv6 without brackets); empty when absent (an absolute-form or CONNECT target does not stand in for it)."),
    Field("uri", "string", "Request target exactly as on the wire: no decoding or re-encoding, spaces and quotes kept, empty when the line has none; only sensitive query parameters are removed."),
    Field("path", "string", "Path part of the uri (no query; an absolute-form target's path; empty for CONNECT)."),
    Field("query", "string", "Query string without '?' (sensitive parameters removed)."),
    Field("referrer", "string", "Referer header; empty when absent."),
    Field("user_agent", "string", "User-Agent header; empty when absent."),
    Field("status", ["integer", "null"], "Response status; null when no response was seen before the transaction timeout, or when the answer is an HTTP/0.9 one (to a request line without a version: a bare body up to the close, whatever it starts with)."),
    Field("resp_bytes", "integer", "Response body bytes (Content-Length, or the sum of chunk sizes; the bytes that came when the connection ends before the declared length)."),
    Field("content_type", "string", "Response Content-Type media type, lower-cased, without parameters."),
    Field("latency_ms", ["number", "null"], "Request start -> response start, milliseconds; null without response."),
    Field("visitor_id", "string", "Salted hash of the visitor cookie, or of client IP + User-Agent when no cookie."),
    Field("member_id", "string", "Salted hash of the logged-in member key; empty for anonymous visitors."),
    Field("http_version", "string", "HTTP version of the request line ('1.0', '1.1'; '0.9' when the line has no version)."),
    Field("no_response", "boolean", "True when the request got no response before the transaction timeout."),
    Field("extra", "object", "Configured non-sensitive values, name -> value: capture.extra_headers by header name, and the named fields of capture.request_bodies as 'body:<field>'."),
)

BODY_FIELD_PREFIX = "body:"  # extra key of a request body's named field (capture.request_bodies)

PAGEVIEW_FIELDS: tuple[Field, ...] = (
    Field("event_id", "string", "The hit's event_id."),
    Field("ts", "number", "Request start, epoch seconds UTC."),
    Field("visitor_id", "string", "Hashed visitor id."),
    Field("member_id", "string", "Hashed member id, empty when anonymous."),
    Field("session_id", "string", "Session the page view belongs to."),
    Field("host", "string", "Host."),
    Field("path", "string", "Path."),
    Field("query", "string", "Query string."),
    Field("method", "string", "HTTP method."),
    Field("status", "integer", "Response status."),
    Field("latency_ms", ["number", "null"], "Server latency, ms."),
    Field("referrer", "string", "Referer header."),
    Field("referrer_host", "string", "Host of the referrer, empty when direct."),
    Field("channel", "string", "From utm_medium when tagged (processing.medium_channels: email | cpc | social | "
          "affiliate | display), else from the referrer: direct | internal | search | social | other"),
    Field("utm_source", "string", "utm_source parameter."),
    Field("utm_medium", "string", "utm_medium parameter."),
    Field("utm_campaign", "string", "utm_campaign parameter."),
    Field("utm_term", "string", "utm_term parameter."),
    Field("utm_content", "string", "utm_content parameter."),
    Field("browser", "string", "Browser family from the User-Agent."),
    Field("os", "string", "OS family from the User-Agent."),
    Field("device", "string", "desktop | mobile | tablet | bot | other"),
    Field("is_bot", "boolean", "Crawler / bot traffic (such page views are kept out of visitor counts)."),
    Field("page_group", "string", "Name of the first matching URL rule (e.g. 'product'); empty if none."),
    Field("section", "string", "Site section from URL rules."),
    Field("product_id", "string", "Product id from URL rules, empty if not a product page."),
    Field("category", "string", "Category from URL rules."),
    Field("menu", "string", "Menu from URL rules."),
    Field("goal", "string", "Goal name when this request matches a goal rule, else empty."),
    Field("goal_value", "number", "Goal value (e.g. purchase amount), 0 if none."),
    Field("country", "string", "ISO 3166-1 alpha-2 country of the client address, empty when unknown or private."),
    Field("city", "string", "City of the client address (processing.geoip_city_db), empty without one."),
)

SESSION_FIELDS: tuple[Field, ...] = (
    Field("session_id", "string", "Deterministic id: hash of visitor_id and the first page view's event_id."),
    Field("visitor_id", "string", "Hashed visitor id."),
    Field("member_id", "string", "Hashed member id (last seen in the session), empty when anonymous."),
    Field("start", "number", "First page view, epoch seconds."),
    Field("end", "number", "Last page view, epoch seconds."),
    Field("duration", "number", "end - start, seconds."),
    Field("pageviews", "integer", "Page views in the session."),
    Field("entry_page", "string", "First page path."),
    Field("exit_page", "string", "Last page path."),
    Field("bounce", "boolean", "Exactly one page view."),
    Field("channel", "string", "Channel of the first page view (see visitwire.pageviews)."),
    Field("referrer_host", "string", "Referrer host of the first page view."),
    Field("utm_source", "string", "UTM of the first page view."),
    Field("utm_medium", "string", "UTM of the first page view."),
    Field("utm_campaign", "string", "UTM of the first page view."),
    Field("browser", "string", "Browser family."),
    Field("os", "string", "OS family."),
    Field("device", "string", "Device class."),
    Field("is_bot", "boolean", "Bot session."),
    Field("close_reason", "string", "idle | max_length | midnight | shutdown; open = an update of a session "
          "still going on (the latest record of a session_id, by end, is its state)"),
    Field("goals", "integer", "Goal conversions in the session."),
    Field("revenue", "number", "Sum of goal values in the session."),
)

SEGMENT_FIELDS: tuple[Field, ...] = (
    Field("member_id", "string", "Hashed member id."),
    Field("ts", "number", "When the change was computed, epoch seconds."),
    Field("segment", "string", "New segment: vip | loyal | at_risk | lost | new | regular"),
    Field("previous_segment", "string", "Previous segment, empty if first seen."),
    Field("r", "integer", "Recency quintile 1..5 (5 = most recent)."),
    Field("f", "integer", "Frequency quintile 1..5."),
    Field("m", "integer", "Monetary quintile 1..5."),
)

# Not a topic: notes on the timeline ("newsletter sent"), written by the API (POST /api/annotations) and
# kept in the history table `annotations`; a deletion is a newer version of the note with deleted set.
ANNOTATION_FIELDS: tuple[Field, ...] = (
    Field("annotation_id", "string", "Random id of the note."),
    Field("ts", "number", "The moment the note is about, epoch seconds."),
    Field("text", "string", "The note, at most 500 characters."),
    Field("deleted", "boolean", "True on the version that deletes the note."),
    Field("updated", "number", "When this version was written, epoch seconds (the latest version wins)."),
)

TOPIC_FIELDS = {
    TOPIC_HITS: HIT_FIELDS,
    TOPIC_PAGEVIEWS: PAGEVIEW_FIELDS,
    TOPIC_SESSIONS: SESSION_FIELDS,
    TOPIC_SEGMENTS: SEGMENT_FIELDS,
}

HIT_FIELD_NAMES = tuple(f.name for f in HIT_FIELDS)
PAGEVIEW_FIELD_NAMES = tuple(f.name for f in PAGEVIEW_FIELDS)
SESSION_FIELD_NAMES = tuple(f.name for f in SESSION_FIELDS)


class Hit(TypedDict):
    event_id: str
    ts: float
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    method: str
    host: str
    uri: str
    path: str
    query: str
    referrer: str
    user_agent: str
    status: int | None
    resp_bytes: int
    content_type: str
    latency_ms: float | None
    visitor_id: str
    member_id: str
    http_version: str
    no_response: bool
    extra: dict[str, str]


def json_schema(topic: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one topic's records."""
    fields = TOPIC_FIELDS[topic]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://visitwire.dev/schema/{topic}.json",
        "title": topic,
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in fields],
        "properties": {f.name: {"type": f.json_type, "description": f.doc} for f in fields},
    }


def write_json_schemas(directory: str) -> list[str]:
    """Regenerate config/schema/<topic>.json; a test checks the committed files match."""
    import os

    import orjson

    paths = []
    for topic in TOPIC_FIELDS:
        path = os.path.join(directory, f"{topic}.json")
        with open(path, "wb") as fh:
            fh.write(orjson.dumps(json_schema(topic), option=orjson.OPT_INDENT_2) + b"\n")
        paths.append(path)
    return paths
