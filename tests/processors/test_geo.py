"""Country (and city, with a MaxMind City database) of each page view's client address."""
from __future__ import annotations

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from config.settings import SettingsError, load_settings
from processors.enrich import Enricher
from sinks.testing.events import make_hit


def _pageview(enricher, ip):
    hit = {**make_hit("e1", 1e9, "v", "/"), "client_ip": ip}
    return enricher.pageview(hit, enricher.classify(hit), "s1")


def test_country_of_the_client_address_without_any_database():
    e = Enricher(load_settings().processing)
    got = {ip: (pv["country"], pv["city"]) for ip in ("8.8.8.8", "1.0.16.1", "2001:4860:4860::8888", "10.0.0.1",
                                                         "127.0.0.1", "not-an-address", "")
           for pv in [_pageview(e, ip)]}
    assert got == {"8.8.8.8": ("US", ""), "1.0.16.1": ("JP", ""), "2001:4860:4860::8888": ("US", ""),
                   "10.0.0.1": ("", ""), "127.0.0.1": ("", ""), "not-an-address": ("", ""), "": ("", "")}


def test_city_from_a_maxmind_city_database(tmp_path):
    db = tmp_path / "city.mmdb"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    w.insert_network(IPSet(["8.8.8.0/24"]), {"city": {"names": {"en": "Mountain View"}}, "country": {"iso_code": "US"}})
    w.insert_network(IPSet(["10.1.0.0/16"]), {"city": {"names": {"en": "Intranet"}}, "country": {"iso_code": "DE"}})
    w.to_db_file(str(db))
    e = Enricher(load_settings(processing={"geoip_city_db": str(db)}).processing)
    assert (_pageview(e, "8.8.8.8")["country"], _pageview(e, "8.8.8.8")["city"]) == ("US", "Mountain View")
    # the registries know nothing of a private address; the shop's own database may
    assert (_pageview(e, "10.1.2.3")["country"], _pageview(e, "10.1.2.3")["city"]) == ("DE", "Intranet")
    assert _pageview(e, "1.0.16.1")["city"] == "" and _pageview(e, "1.0.16.1")["country"] == "JP"


def test_a_city_database_that_is_not_there_is_named(tmp_path):
    with pytest.raises(SettingsError, match="processing.geoip_city_db.*not a readable file"):
        load_settings(processing={"geoip_city_db": str(tmp_path / "missing.mmdb")})
