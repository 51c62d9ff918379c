"""The `visitwire report` kinds as plain tables (list of row dicts), shared by the CLI and the API.

`build_report(store, settings, kind, rng, limit)` returns a Report: its first section is the
main table (the one `--csv` prints); more sections add context (segment sizes, funnel steps).
Reports only read: segments are scored fresh from the history for the report's end time,
without storing anything (the scheduled Faust timer stores and announces changes).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sinks.reads import cohorts, funnels, goals, products, profiles, recommendations, rfm, usage
from sinks.reads.common import AnalyticsError, History, TimeRange
from sinks.reads.goal_events import GoalConfig

KINDS = ("visitors", "products", "funnels", "segments", "recommendations", "cohorts")


@dataclass
class Section:
    name: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns and self.rows:
            self.columns = list(self.rows[0])


@dataclass
class Report:
    kind: str
    rng: TimeRange
    sections: list[Section]

    def as_json(self) -> dict[str, Any]:
        return {"report": self.kind, "from": self.rng.since, "to": self.rng.until,
                **{s.name: s.rows for s in self.sections}}


def build_report(store: History, settings: Any, kind: str, rng: TimeRange, limit: int = 20) -> Report:
    a, cfg = settings.analytics, GoalConfig.from_settings(settings)
    if kind == "visitors":
        rows = profiles.top_visitors(store, rng, limit)
        return Report(kind, rng, [Section("visitors", "Most active visitors", rows)])
    if kind == "products":
        rows = usage.usage(store, "product_id", rng, limit)
        summary = goals.commerce_summary(store, rng, cfg)
        conv = goals.conversions(store, a.purchase_goal, "channel", rng, cfg, limit)
        sales = products.product_sales(store, rng, cfg, limit)
        together = products.bought_together(store, rng, cfg, a.recommendation_min_support, limit=limit)
        return Report(kind, rng, [Section("products", "Product usage", rows),
                                  Section("sales", "Products bought (views, carts, orders, units, revenue)", sales),
                                  Section("bought_together", "Bought together (orders holding both)", together),
                                  Section("conversions", f"Conversions ({a.purchase_goal}) per channel", conv),
                                  Section("summary", "Commerce", [summary])])
    if kind == "funnels":
        if not a.funnels:
            raise AnalyticsError("no funnels configured: add analytics.funnels.NAME = [URL patterns] to the config")
        results = funnels.all_funnels(store, a.funnels, rng, cfg)
        rows = [{"funnel": f["funnel"], **s} for f in results for s in f["steps"]]
        overview = [{k: f[k] for k in ("funnel", "entered", "completed", "conversion_rate")} for f in results]
        return Report(kind, rng, [Section("steps", "Funnel steps", rows), Section("funnels", "Funnels", overview)])
    if kind == "segments":
        now = rng.now()
        seg = rfm.SegmentConfig.from_settings(settings)
        scored = rfm.scored_members(store, now, replace(rng, until=now), cfg, seg)
        counts = scored.sizes()
        sizes = [{"segment": s, "members": counts.get(s, 0),
                  "share": round(counts.get(s, 0) / len(scored), 4) if len(scored) else 0.0} for s in seg.names]
        rfm_sum = scored.r + scored.f + scored.m  # highest first, then revenue, then member_id (the index)
        top = np.lexsort((np.arange(len(scored)), -scored.cols.revenue, -rfm_sum))[:limit]
        members = scored.rows(top, now, ("member_id", "segment", "r", "f", "m", "recency_days", "visits", "orders",
                                         "revenue"))
        return Report(kind, rng, [Section("sizes", "Segment sizes (RFM scored now)", sizes),
                                  Section("members", "Members by RFM score", members),
                                  Section("movement", "Segment changes stored in the range",
                                          rfm.segment_movement(store, rng)),
                                  Section("timeline", "Stored segment sizes over time",
                                          rfm.segment_timeline(store, rng))])
    if kind == "recommendations":
        pairs = recommendations.co_visitation(store, a.recommendation_min_support, rng)
        pairs.sort(key=lambda p: (-p["support"], p["product_id"], p["recommended_id"]))
        return Report(kind, rng, [Section("pairs", f"Viewed together (support >= {a.recommendation_min_support})",
                                          pairs[:limit], ["product_id", "recommended_id", "support"])])
    if kind == "cohorts":
        sections = []
        for who in ("visitors", "members"):
            rows = []
            found = cohorts.cohorts(store, who, rng)[-limit:]
            # Columns up to the last week anyone came back in (later ones are all zero).
            weeks = max((n for c in found for n, k in enumerate(c["retained"]) if k is not None), default=0) + 1
            for c in found:
                row = {"cohort": c["cohort"], "size": c["size"]}
                row.update({f"w{n}": c["rates"][n] for n in range(weeks)})
                rows.append(row)
            sections.append(Section(who, f"Weekly retention of {who} (share active N weeks after the first visit)",
                                    rows))
        return Report(kind, rng, sections)
    raise AnalyticsError(f"unknown report {kind!r}; use one of {', '.join(KINDS)}")
