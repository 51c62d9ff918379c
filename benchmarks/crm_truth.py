"""The CRM figures of a demo run beside the shop's own truth, with the count of mismatches (goal: 0).

    python benchmarks/crm_truth.py [--visitors 200] [--duration 240] [--seed 7] [--keep DIR]

Runs `visitwire demo --truth FILE` (the shop logs every request it served: visitor cookie sent or
given, member logged in at that moment, order items and amounts, bot flag; root: live capture on lo)
with its own data directory, then reads the history store the run left and compares, figure by
figure, what visitwire reports with what the truth log says, computed here by the documented rules:
- a page view is a human GET answered 200 with HTML (not /static/, robots.txt, sitemap.xml);
- a visitor is the shop's visitor cookie; the one a response gives counts for that request when the client
  sends it back within capture.transaction_timeout_s, else (a crawler without cookies, a one-page visit)
  the request's visitor is its (IP, User-Agent);
- visits split a visitor's page views at processing.session_idle_s of silence and at UTC midnight;
- a request belongs to the member logged in at that moment; the anonymous start of a visit joins the
  visit's first member; members + anonymous = visitors (sinks/reads/members.py);
- a segment change announced on visitwire.segments is timed from the order's request to the change.
Prints one row per figure (visitwire, truth, mismatches) and the total.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from capture.identity import Identity
from config.settings import Settings
from sinks.history import open_history
from sinks.reads import goals, products, rfm, usage
from sinks.reads.common import TimeRange
from sinks.reads.goal_events import GoalConfig
from sinks.reads.stats import compute_stats, parse_stats_request

ROOT = Path(__file__).resolve().parent.parent

SALT = "crm-truth-bench-salt"
STATIC = ("/static/",)
NOT_PAGES = ("/robots.txt", "/sitemap.xml")


# -- the truth, from the shop's log ------------------------------------------------------------------
def load_truth(path: Path, timeout_s: float = 30.0) -> list[dict]:
    """The shop's requests in time order, each with its visitor key (`key`, see the module's rules)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["ts"])
    back: dict[str, float] = {}  # cookie value -> first time a request carried it
    for r in rows:
        if r["visitor"]:
            back.setdefault(r["visitor"], r["ts"])
    for r in rows:
        given = r["visitor_set"]
        if r["visitor"]:
            r["key"] = r["visitor"]
        elif given and given in back and back[given] - r["ts"] <= timeout_s:
            r["key"] = given
        else:
            r["key"] = f"ip+ua|{r['client_ip']}|{r['user_agent']}"
    return rows


def visitor_of(r: dict) -> str:
    return r["key"]


def is_pageview(r: dict) -> bool:
    return (r["method"] == "GET" and r["status"] == 200 and not r["path"].startswith(STATIC)
            and r["path"] not in NOT_PAGES)


def truth_figures(rows: list[dict], idle_s: float) -> dict:
    humans = [r for r in rows if not r["bot"]]
    pvs = [r for r in humans if is_pageview(r)]
    # visits: per visitor, split at idle_s of silence and at UTC midnight
    visit_of: dict[int, tuple[str, int]] = {}
    visits_of_visitor: dict[str, list[list[dict]]] = defaultdict(list)
    for r in pvs:
        v = visitor_of(r)
        vs = visits_of_visitor[v]
        if not vs or r["ts"] - vs[-1][-1]["ts"] > idle_s or r["ts"] // 86400 != vs[-1][0]["ts"] // 86400:
            vs.append([])
        vs[-1].append(r)
        visit_of[id(r)] = (v, len(vs) - 1)
    first_member = {}
    for v, vs in visits_of_visitor.items():
        for n, visit in enumerate(vs):
            logged = [r for r in visit if r["member"]]
            if logged:
                first_member[(v, n)] = (logged[0]["member"], logged[0]["ts"])

    def owner(r: dict, visit: tuple[str, int] | None) -> str:
        if r["member"]:
            return r["member"]
        fm = first_member.get(visit) if visit else None
        return fm[0] if fm and r["ts"] < fm[1] else ""

    def visit_of_goal(r: dict) -> tuple[str, int] | None:
        """The visitor's latest visit started at or before the request, if it was still open."""
        vs = visits_of_visitor.get(visitor_of(r), [])
        best = None
        for n, visit in enumerate(vs):
            if visit[0]["ts"] <= r["ts"]:
                best = n
        if best is None or r["ts"] - vs[best][-1]["ts"] > idle_s:
            return None
        return visitor_of(r), best

    members: dict[str, dict] = defaultdict(lambda: {"orders": 0, "revenue": 0.0, "visits": set()})
    for r in pvs:
        m = owner(r, visit_of[id(r)])
        if m:
            members[m]["visits"].add(visit_of[id(r)])
    orders = [r for r in humans if r["order"]]
    for r in orders:
        m = owner(r, visit_of_goal(r))
        if m:
            members[m]["orders"] += 1
            members[m]["revenue"] = round(members[m]["revenue"] + r["order"]["amount"], 2)
    # logins without a later page view still make a member (its login request carries it)
    for r in humans:
        if r["member"]:
            members[r["member"]]
    visitors = {visitor_of(r) for r in pvs}
    member_visitors = {visitor_of(r) for r in pvs if r["member"]}
    product_views = Counter(r["path"].split("/")[2] for r in pvs if r["path"].startswith("/product/"))
    units, revenue_by_product, orders_by_product = Counter(), Counter(), Counter()
    for r in orders:
        for pid, n, price in r["order"]["items"]:
            units[pid] += n
            orders_by_product[pid] += 1
            revenue_by_product[pid] = round(revenue_by_product[pid] + n * price, 2)
    carts = Counter(r["cart_add"] for r in humans if r["cart_add"])
    return {
        "requests": len(rows), "pageviews": len(pvs), "visitors": len(visitors),
        "member_visitors": len(member_visitors), "anonymous_visitors": len(visitors - member_visitors),
        "bot_visitors": len({visitor_of(r) for r in rows if r["bot"]}),
        "orders": len(orders), "revenue": round(sum(r["order"]["amount"] for r in orders), 2),
        "members": {m: {"orders": d["orders"], "revenue": d["revenue"], "visits": len(d["visits"])}
                    for m, d in members.items()},
        "product_views": dict(product_views), "product_units": dict(units), "product_revenue": dict(revenue_by_product),
        "product_orders": dict(orders_by_product), "product_carts": dict(carts),
        "start": rows[0]["ts"] if rows else 0.0, "end": rows[-1]["ts"] if rows else 0.0,
    }


# -- what visitwire says ---------------------------------------------------------------------------
def visitwire_figures(history_url: str, settings: Settings, start: float, end: float, bot_agents: list[str]) -> dict:
    store = open_history(history_url)
    try:
        q = lambda sql: store.query(sql)  # noqa: E731
        # bot requests are hits, not page views: the visitor ids visitwire gave the crawlers' requests
        one = store.query("SELECT (SELECT uniqExact(event_id) FROM hits) AS requests, "
                          "(SELECT uniqExact(event_id) FROM pageviews WHERE is_bot = 0) AS pageviews, "
                          "(SELECT uniqExact(visitor_id) FROM pageviews WHERE is_bot = 0) AS visitors, "
                          "(SELECT uniqExact(visitor_id) FROM hits WHERE has(%(bots)s, user_agent)) AS bot_visitors",
                          {"bots": bot_agents})[0]
        req = parse_stats_request({"from": str(int(start) - 60), "to": str(int(end) + 120), "metrics": "visitors",
                                   "by": "member"})
        split = {r["key"]: r["visitors"] for r in compute_stats(q, req)["rows"]}
        cfg = GoalConfig.from_settings(settings)
        rng = TimeRange(None, end + 120)
        purchase = {g["goal"]: g for g in goals.goal_counts(store, rng, cfg)}.get(cfg.purchase, {})
        members = {m["member_id"]: m for m in rfm.member_stats(store, rng, cfg)}
        views = {r["product_id"]: r["views"] for r in usage.usage(store, "product_id", rng, limit=100_000)}
        sales = products.product_sales(store, rng, cfg, limit=100_000)
        changes = store.query("SELECT DISTINCT member_id, ts_epoch, segment, previous_segment FROM segments "
                              "ORDER BY member_id, ts_epoch")
        return {"segment_changes": changes, "requests": int(one["requests"]), "pageviews": int(one["pageviews"]),
                "visitors": int(one["visitors"]), "member_visitors": split.get("member", 0),
                "anonymous_visitors": split.get("anonymous", 0), "bot_visitors": int(one["bot_visitors"]),
                "orders": int(purchase.get("conversions", 0)), "revenue": round(float(purchase.get("value", 0)), 2),
                "members": members, "product_views": views,
                **{f"product_{k}": {r["product_id"]: r[k] for r in sales if r[k]}
                   for k in ("units", "revenue", "orders", "carts")}}
    finally:
        store.close()


# -- comparison ------------------------------------------------------------------------------------
def compare(got: dict, want: dict, idn: Identity) -> list[tuple[str, str, str, int]]:
    """(figure, visitwire, truth, mismatches) rows."""
    rows = []
    for key in ("requests", "pageviews", "visitors", "member_visitors", "anonymous_visitors", "bot_visitors",
                "orders", "revenue"):
        rows.append((key.replace("_", " "), f"{got[key]:,}", f"{want[key]:,}", int(got[key] != want[key])))
    ids = {idn.member_id(m.encode()): m for m in want["members"]}
    by_name = {ids.get(mid, mid): m for mid, m in got["members"].items()}
    for field in ("orders", "revenue", "visits"):
        bad = sum(1 for name in set(by_name) | set(want["members"])
                  if round(by_name.get(name, {}).get(field, 0), 2)
                  != round(want["members"].get(name, {}).get(field, 0), 2))
        rows.append((f"members' {field} (per member)", f"{len(by_name)} members",
                     f"{len(want['members'])} members", bad))
    total = round(sum(m["revenue"] for m in got["members"].values()), 2)
    rows.append(("sum of members' revenue <= revenue", f"{total:,}", f"<= {want['revenue']:,}",
                 int(total > want["revenue"] + 1e-6)))
    for key in ("views", "carts", "orders", "units", "revenue"):
        g, w = got[f"product_{key}"], want[f"product_{key}"]
        bad = sum(1 for p in set(g) | set(w) if round(g.get(p, 0), 2) != round(w.get(p, 0), 2))
        rows.append((f"product {key} (per product)", f"{len(g)} products", f"{len(w)} products", bad))
    return rows


def segment_latency(changes: list[dict], rows: list[dict], idn: Identity) -> tuple[list[float], int]:
    """Seconds from each member's order to the segment change it caused (the first change of that member
    after the order, with no other change in between), and the number of flaps (A -> B -> A)."""
    orders: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["order"] and r["member"]:
            orders[idn.member_id(r["member"].encode())].append(r["ts"])
    by_member: dict[str, list[dict]] = defaultdict(list)
    for c in changes:
        by_member[c["member_id"]].append(c)
    latencies, flaps = [], 0
    for mid, cs in by_member.items():
        prev_t = float("-inf")
        for i, c in enumerate(cs):
            t = float(c["ts_epoch"])
            caused = [o for o in orders.get(mid, []) if prev_t < o <= t]
            if caused:
                latencies.append(t - max(caused))
            if i >= 2 and cs[i - 2]["segment"] == c["segment"]:
                flaps += 1
            prev_t = t
    return latencies, flaps


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=200)
    ap.add_argument("--duration", type=float, default=240.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", help="run in this directory and keep it (truth log, history)")
    a = ap.parse_args()
    console = Console()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="crm_truth_"))
    work.mkdir(parents=True, exist_ok=True)
    truth_path = work / "truth.jsonl"
    truth_path.unlink(missing_ok=True)
    history_url = f"chdb://{work / 'chdb'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISITWIRE_")}
    env.update({"VISITWIRE_DATA_DIR": str(work / "data"), "VISITWIRE_HISTORY__URL": history_url,
                "VISITWIRE_CAPTURE__SALT": SALT})  # known, so member ids can be named from the truth
    from engine.services import free_port

    env["VISITWIRE_WEB__PORT"] = str(free_port())
    console.print(f"demo: {a.visitors} visitors, {a.duration:.0f} s, seed {a.seed} (in {work})")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--duration", str(a.duration), "--visitors",
                        str(a.visitors), "--seed", str(a.seed), "--truth", str(truth_path)],
                       env=env, cwd=ROOT, capture_output=True, text=True)
    (work / "demo.log").write_text(r.stderr)
    if r.returncode != 0:
        console.print(f"[red]the demo failed ({r.returncode}); see {work / 'demo.log'}")
        return 1
    settings = Settings(capture={"salt": SALT})
    want = truth_figures(load_truth(truth_path, settings.capture.transaction_timeout_s),
                         settings.processing.session_idle_s)
    from engine.crowd import BOTS

    got = visitwire_figures(history_url, settings, want["start"], want["end"], list(BOTS))
    rows = compare(got, want, Identity(settings.capture))
    t = Table(title=f"CRM figures vs the shop's truth ({a.visitors} visitors, {a.duration:.0f} s)")
    for c in ("figure", "visitwire", "truth", "mismatches"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    for name, g, w, bad in rows:
        t.add_row(name, g, w, f"[red]{bad}" if bad else "0")
    console.print(t)
    lat, flaps = segment_latency(got["segment_changes"], load_truth(truth_path), Identity(settings.capture))
    console.print(f"segment changes: {len(got['segment_changes'])}, caused by an order: {len(lat)}, "
                  f"order -> change p50 {_pct(lat, 0.5):.2f} s, p99 {_pct(lat, 0.99):.2f} s "
                  f"(goal p99 < 5 s); flaps (A -> B -> A): {flaps}")
    rows.append(("segment change p99 < 5 s", f"{_pct(lat, 0.99):.2f} s", "< 5 s",
                 int(bool(lat) and _pct(lat, 0.99) >= 5)))
    rows.append(("segment flaps", str(flaps), "0", int(flaps > 0)))
    total = sum(bad for *_, bad in rows)
    console.print(f"mismatches: {total} (goal 0)")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if total == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
