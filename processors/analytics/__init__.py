"""Visitor relationship analytics over the history store (ClickHouse 18.16 server or chdb).

Everything is driven by configuration, so it works on any site without code changes:
processing.url_rules (sections, products, categories, menus of page views),
processing.goals (goal requests, read from `hits`), analytics.funnels (URL patterns),
analytics.purchase_goal / cart_goal / rfm_new_days / recommendation_min_support /
rfm_interval_s / recommendation_refresh_s / profile_ttl_s / max_live_profiles.

Where to find what
  profiles         visitor / member profiles; members include the anonymous history of every
                   visitor id that ever logged in as them (table visitor_member)
  usage            page / product / category / menu usage, time on page, entry / exit, transitions
  goal_events      goal requests from `hits` with the goal rules, attributed to human sessions
  goals            conversions per channel / campaign, revenue per visitor, cart abandonment
  funnels          ordered steps within a session with drop-off
  rfm              RFM quintiles and named segments (rules in its docstring), segment history
  recommendations  "viewed together" co-visitation, per product and per visitor
  cohorts          weekly retention of visitors and members
  reports          the `visitwire report` kinds as tables (engine/report.py prints them)
  live             live visitor profiles + member links in Redis
  agents           Faust agents: live profiles, RFM timer -> `segments` + visitwire.segments,
                   recommendation refresh -> `recommendations`
  sample           a synthetic shop history with known ground truth (tests, benchmarks)
Tables and views: config/migrations/0100_analytics.sql. API: engine/web/analytics_routes.py.

Every query is exact under at-least-once delivery: sources are read through
SELECT DISTINCT event_id, ... (a replayed row is identical to the original).
"""
