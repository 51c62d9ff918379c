"""POST /api/query's policy: which SQL the API runs for a caller (one read-only statement)."""
from __future__ import annotations

import re
from typing import Any

from sinks.reads.stats import StatsError

# -- read-only SQL -----------------------------------------------------------------------------
_READ_ONLY_START = re.compile(r"^\s*\(*\s*(select|with|show|describe|desc|exists)\b", re.I)
_FORBIDDEN = re.compile(r"\binto\s+outfile\b|\b(file|url|remote|remoteSecure|s3|s3Cluster|hdfs|mysql|postgresql|"
                        r"jdbc|odbc|executable|input|cluster|python|sqlite|mongodb|azureBlobStorage)\s*\(", re.I)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def check_read_only(sql: Any) -> str:
    """Accept one SELECT/WITH/SHOW/DESCRIBE statement that reads only the store's own tables."""
    if not isinstance(sql, str) or not sql.strip():
        raise StatsError('body must be JSON {"sql": "SELECT ..."} with a non-empty string')
    text = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if ";" in text:
        raise StatsError("one statement per request: remove the ';' between statements")
    if not _READ_ONLY_START.match(text):
        raise StatsError("read-only API: only SELECT, WITH, SHOW and DESCRIBE statements are accepted")
    if _FORBIDDEN.search(text):
        raise StatsError("read-only API: table functions that reach files, URLs or other servers "
                         "and INTO OUTFILE are not allowed")
    return text
