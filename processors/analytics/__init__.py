"""Visitor relationship analytics that run in the worker.

  live             live visitor profiles + member links in Redis
  agents           Faust agents: live profiles, RFM timer -> `segments` + visitwire.segments,
                   recommendation refresh -> `recommendations`
  recompute        what those timers compute and write: segment changes, the recommendation pair table
  claims           one announcement per segment change across workers (Redis)

The SQL read models they and the API use (profiles, usage, goals, funnels, RFM,
recommendations, cohorts, reports) live in sinks/reads/. Settings: analytics.rfm_interval_s /
recommendation_refresh_s / first_run_after_s / profile_ttl_s / max_live_profiles.
"""
