"""Visitor relationship analytics: profiles, usage, goals, funnels, RFM segments,
recommendations and cohorts over the history store (ClickHouse 18.16 or chdb), plus the
Faust agents that keep live profiles in Redis and announce segment changes.

Modules: common (time ranges, URL patterns, deduplicated sources), profiles, usage, goals,
funnels, rfm, recommendations, cohorts, reports (tables for `visitwire report` and the API),
agents (Faust), live (Redis profiles), sample (a synthetic history with known ground truth).
"""
