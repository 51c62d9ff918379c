"""The read side of the history store (ClickHouse 18.16 server or chdb): every SQL query the API,
the reports, the run summary and the worker's scheduled analytics run, in one place below engine/
and above the stores (sinks/history.py).

Where to find what
  stats            GET /api/stats and GET /api/visitors/{id}: metrics, breakdowns, series, validation
  host_days        each site's page views, hits and errors per closed day (the Site list, by=host)
  queries          ready-made figures (per-interval rollups, latency quantiles, top, sessions summary,
                   segment and event counts, one run's totals)
  common           shared pieces of the analytics queries: time ranges, URL patterns, deduplicated sources
  members          identity over time: which member each request belongs to (the one logged in at
                   that moment; a visit's anonymous start joins its first member)
  profiles         visitor / member profiles; a member's over the requests that belong to it
  usage            page / product / category / menu usage, time on page, entry / exit, transitions
  goal_events      goal requests from `hits` with the goal rules, attributed to human sessions
  goals            conversions per channel / campaign, revenue per visitor, cart abandonment
  funnels          ordered steps within a session with drop-off
  rfm              RFM quintiles and named segments (rules in its docstring), segment history
  recommendations  "viewed together" co-visitation, per product and per visitor
  cohorts          weekly retention of visitors and members
  reports          the `visitwire report` kinds as tables (engine/report.py prints them)

The analytics are driven by configuration, so they work on any site without code changes:
processing.url_rules (sections, products, categories, menus of page views),
processing.goals (goal requests, read from `hits`), analytics.funnels (URL patterns),
analytics.purchase_goal / cart_goal / segments / recommendation_min_support.
Tables and views: config/migrations/0100_analytics.sql. API: engine/web/analytics_routes.py.

Every query is exact under at-least-once delivery: events are read once per event_id / session_id
(SELECT DISTINCT, uniqExact, argMax by end_epoch, or uniqExactMerge of the rollups).
"""
