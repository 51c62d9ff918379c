"""Where a client address is: its country from the registries' allocation data that the iptocc wheel
ships (offline, no file to download, ~100 ns a lookup), and its city from a MaxMind City / GeoLite2-City
database when processing.geoip_city_db names one. Private, loopback and unparsable addresses have none.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from iptocc import country_code


class Geo:
    def __init__(self, city_db: str = ""):
        self._city = None
        if city_db:
            import maxminddb

            self._city = maxminddb.open_database(city_db)  # memory-mapped; checked readable by the settings
        self._lookup = lru_cache(maxsize=50_000)(self._locate)

    def locate_all(self, addresses: Sequence[str]) -> list[tuple[str, str]]:
        """(country, city) per address, '' where unknown; a batch repeats addresses, so each is cached."""
        return [self._lookup(a) if type(a) is str else ("", "") for a in addresses]  # garbage has no place

    def _locate(self, address: str) -> tuple[str, str]:
        if not address:
            return "", ""
        country = country_code(address) or ""
        city = ""
        if self._city is not None:
            try:
                rec = self._city.get(address)
            except ValueError:  # not an address
                rec = None
            if rec:
                city = ((rec.get("city") or {}).get("names") or {}).get("en", "")
                country = country or (rec.get("country") or {}).get("iso_code", "")
        return country, city

    def close(self) -> None:
        if self._city is not None:
            self._city.close()
