"""Which SQL a caller may run on the history: one SELECT over visitwire's own tables, nothing else.

Decided by construction, not by pattern matching on the text:
1. sqlglot's ClickHouse tokenizer splits the text into tokens (comments, heredocs and escapes resolved).
2. The statement that will run is rebuilt from those tokens alone: comments dropped, every string and
   quoted identifier re-quoted one canonical way, every other token checked to be plain ASCII. The
   server therefore runs exactly the token sequence checked here; a text that two lexers would read
   differently cannot smuggle a second meaning through.
3. Every name called like a function (`name(`) must be on FUNCTIONS (pure functions, aggregates with
   their combinators, type names for CAST). `file`, `url`, `remote`, `dictGet`, ... are not, whatever
   their quoting or case.
4. sqlglot parses the rebuilt text: exactly one statement, a SELECT (or UNION / INTERSECT / EXCEPT of
   SELECTs); every table it reads is a visitwire table (or a CTE of the query) in the store's own
   database; no SETTINGS, FORMAT or INTO clause of the caller's.
5. The store runs it with limits the caller cannot override (QueryLimits: readonly=1, so the server
   itself refuses writes, SET and table functions; execution time, result rows, memory).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp, parse
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType


class QueryRefused(ValueError):
    """The SQL is not a read of visitwire's tables; the message says what to change."""


# The tables and views of config/migrations: what a caller may read.
TABLES = frozenset({
    "hits", "pageviews", "sessions", "segments", "recommendations", "visitor_member",
    "hits_per_minute", "pageviews_per_minute", "latency_per_minute",
    "member_segments", "product_usage", "visitor_profiles",
})

_AGGREGATES = """
count sum avg min max any anyLast anyHeavy argMin argMax uniq uniqExact uniqCombined uniqCombined64 uniqHLL12
uniqTheta groupArray groupUniqArray groupArrayInsertAt groupArraySample groupArrayMovingSum groupBitAnd groupBitOr
groupBitXor quantile quantiles quantileExact quantilesExact quantileExactWeighted quantilesExactWeighted
quantileTiming quantilesTiming quantileTDigest quantilesTDigest quantileDeterministic quantilesDeterministic
quantileBFloat16 quantilesBFloat16 median medianExact medianTiming medianTDigest stddevPop stddevSamp varPop
varSamp covarPop covarSamp corr topK topKWeighted sumMap minMap maxMap avgWeighted sumWithOverflow sumKahan
sequenceMatch sequenceCount windowFunnel retention histogram simpleLinearRegression entropy skewPop skewSamp
kurtPop kurtSamp first_value last_value row_number rank dense_rank percent_rank cume_dist ntile lagInFrame
leadInFrame nth_value any_value countDistinct boundingRatio deltaSum exponentialMovingAverage
""".split()

# Suffixes ClickHouse composes onto any aggregate (countIf, uniqExactMerge, sumIfOrNull, ...).
_COMBINATORS = ("If", "Array", "Distinct", "OrNull", "OrDefault", "MergeState", "Merge", "State", "ForEach",
                "Resample", "SimpleState", "Map", "ArgMin", "ArgMax")

_SCALARS = """
if multiIf ifNull nullIf coalesce assumeNotNull isNull isNotNull toNullable isFinite isInfinite isNaN
equals notEquals less greater lessOrEquals greaterOrEquals plus minus multiply divide intDiv intDivOrZero modulo
moduloOrZero negate abs and or not xor in notIn like notLike ilike notILike tuple tupleElement array arrayElement
has hasAny hasAll hasSubstr indexOf countEqual empty notEmpty length
round roundBankers floor ceil ceiling trunc truncate sqrt cbrt exp exp2 exp10 log ln log2 log10 pow power
greatest least sign gcd lcm e pi bitAnd bitOr bitXor bitNot bitShiftLeft bitShiftRight
toInt8 toInt16 toInt32 toInt64 toInt128 toInt256 toUInt8 toUInt16 toUInt32 toUInt64 toUInt128 toUInt256
toFloat32 toFloat64 toDecimal32 toDecimal64 toDecimal128 toString toFixedString toDate toDate32 toDateTime
toInt8OrZero toInt16OrZero toInt32OrZero toInt64OrZero toUInt8OrZero toUInt16OrZero toUInt32OrZero
toUInt64OrZero toFloat32OrZero toFloat64OrZero toDateOrZero toDateTimeOrZero toInt32OrNull toInt64OrNull
toUInt32OrNull toUInt64OrNull toFloat64OrNull toDateOrNull toDateTimeOrNull toTypeName toBool
parseDateTimeBestEffort parseDateTimeBestEffortOrNull parseDateTimeBestEffortOrZero cast accurateCast
accurateCastOrNull toUnixTimestamp fromUnixTimestamp toTimeZone toYear toQuarter toMonth toDayOfYear
toDayOfMonth toDayOfWeek toHour toMinute toSecond toMonday toStartOfWeek toStartOfDay toStartOfHour
toStartOfMinute toStartOfSecond toStartOfFiveMinute toStartOfFiveMinutes toStartOfTenMinutes
toStartOfFifteenMinutes toStartOfInterval toStartOfMonth toStartOfQuarter toStartOfYear toStartOfISOYear
toISOWeek toISOYear toWeek toYearWeek toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss toRelativeYearNum toRelativeMonthNum
toRelativeWeekNum toRelativeDayNum toRelativeHourNum toRelativeMinuteNum toRelativeSecondNum dateDiff date_diff
dateTrunc date_trunc dateAdd date_add dateSub date_sub timeSlot timeSlots now today yesterday formatDateTime
addSeconds addMinutes addHours addDays addWeeks addMonths addQuarters addYears subtractSeconds subtractMinutes
subtractHours subtractDays subtractWeeks subtractMonths subtractQuarters subtractYears toIntervalSecond
toIntervalMinute toIntervalHour toIntervalDay toIntervalWeek toIntervalMonth toIntervalQuarter toIntervalYear
lower upper lowerUTF8 upperUTF8 lengthUTF8 concat concatWithSeparator substring substr substringUTF8 mid
position positionCaseInsensitive positionUTF8 locate startsWith endsWith trim trimLeft trimRight trimBoth ltrim
rtrim splitByChar splitByString splitByRegexp arrayStringConcat replaceAll replaceOne replace replaceRegexpOne
replaceRegexpAll match extract extractAll leftPad rightPad lpad rpad reverse repeat left right
countSubstrings multiSearchAny multiSearchFirstIndex multiMatchAny
domain domainWithoutWWW protocol path pathFull queryString fragment extractURLParameter extractURLParameters
extractURLParameterNames cutQueryString cutFragment cutQueryStringAndFragment cutWWW decodeURLComponent
encodeURLComponent topLevelDomain firstSignificantSubdomain URLHierarchy URLPathHierarchy
arrayJoin arrayMap arrayFilter arraySort arrayReverseSort arrayEnumerate arrayEnumerateUniq arraySlice
arrayDistinct arrayUniq arrayCount arraySum arrayMin arrayMax arrayAvg arrayProduct arrayExists arrayAll
arrayFirst arrayFirstIndex arrayLast arrayLastIndex arrayConcat arrayPushBack arrayPushFront arrayPopBack
arrayPopFront arrayResize arrayReduce arrayZip arrayFlatten flatten arrayCompact arrayIntersect arrayReverse
arrayCumSum arrayCumSumNonNegative arrayDifference arraySplit arrayShuffle arrayPartialSort range emptyArrayString
emptyArrayUInt64 emptyArrayInt64 emptyArrayFloat64 arrayStringConcat
map mapKeys mapValues mapContains
cityHash64 sipHash64 sipHash128 xxHash32 xxHash64 murmurHash2_64 murmurHash3_64 intHash32 intHash64 farmHash64
hex lower JSONExtract JSONExtractString JSONExtractInt JSONExtractUInt JSONExtractFloat JSONExtractBool
JSONExtractRaw JSONHas JSONLength JSONExtractKeys visitParamExtractString visitParamExtractInt
visitParamExtractFloat visitParamHas formatReadableSize formatReadableQuantity formatReadableTimeDelta transform
identity bar
""".split()

# Type names, called inside CAST(x AS Nullable(String)) and the like.
_TYPES = """
Nullable Array LowCardinality Tuple Map FixedString Decimal Decimal32 Decimal64 Decimal128 DateTime DateTime64
Enum8 Enum16 Nested
""".split()

FUNCTIONS = frozenset(name.lower() for name in _AGGREGATES + _SCALARS + _TYPES)
_AGGREGATE_NAMES = frozenset(name.lower() for name in _AGGREGATES)

# Keywords that may stand before "(" without being a call: IN (subquery), FROM (subquery), OVER (...).
_NOT_CALLS = frozenset("""
IN FROM JOIN AS USING EXISTS NOT AND OR WHERE PREWHERE ON BY SELECT ALL ANY DISTINCT THEN ELSE WHEN CASE OVER
HAVING LIMIT OFFSET UNION INTERSECT EXCEPT WITH INTERVAL BETWEEN LIKE ILIKE IS ASC DESC GLOBAL FILTER PARTITION
ROWS RANGE END
""".split())

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_.]+\Z")  # names, keywords and numbers
_KEYWORDS = re.compile(r"[A-Za-z]+(?:\s+[A-Za-z]+)+\Z")  # GROUP BY, WITH TOTALS, LEFT OUTER JOIN
_OPERATORS = frozenset("( ) [ ] { } , . + - * / % = == != <> < > <= >= || -> :: : ? ;".split())
_STRING_TYPES = frozenset({TokenType.STRING, TokenType.HEREDOC_STRING, TokenType.RAW_STRING})


def is_allowed_function(name: str) -> bool:
    low = name.lower()
    if low in FUNCTIONS:
        return True
    # countIf, uniqExactMerge, sumIfOrNull: strip aggregate combinators from the end, one at a time.
    stripped = name
    while True:
        for suffix in _COMBINATORS:
            if stripped.endswith(suffix) and len(stripped) > len(suffix):
                stripped = stripped[: -len(suffix)]
                if stripped.lower() in _AGGREGATE_NAMES:
                    return True
                break
        else:
            return False


@dataclass(frozen=True)
class QueryLimits:
    """Server settings every policed query runs under. readonly comes last: once it is 1 the server
    refuses to change any other setting."""

    max_execution_time_s: int = 30
    max_result_rows: int = 100_000
    max_memory_usage_bytes: int = 2 << 30
    max_result_bytes: int = 64 << 20

    def settings(self) -> dict:
        return {"max_execution_time": self.max_execution_time_s, "max_result_rows": self.max_result_rows,
                "max_result_bytes": self.max_result_bytes, "result_overflow_mode": "throw",
                "max_memory_usage": self.max_memory_usage_bytes, "readonly": 1}


def query_limits(settings) -> QueryLimits:
    """The limits of settings.web (query_timeout_s, query_max_rows, query_max_memory_mb, query_max_result_mb)."""
    web = settings.web
    return QueryLimits(max_execution_time_s=web.query_timeout_s, max_result_rows=web.query_max_rows,
                       max_memory_usage_bytes=web.query_max_memory_mb << 20,
                       max_result_bytes=web.query_max_result_mb << 20)


def store_database(store) -> str:
    """The database a history store keeps visitwire's tables in (chdb: default)."""
    return getattr(store, "database", None) or "default"


def run_policed(store, sql: str, limits: QueryLimits) -> list[dict]:
    """Run SQL that police() returned under `limits`."""
    return store.query(sql, settings=limits.settings())


def _quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_identifier(text: str) -> str:
    return "`" + text.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _canonical(tokens) -> str:
    """The statement rebuilt from its tokens alone (see the module docstring, step 2)."""
    parts = []
    for tok in tokens:
        if tok.token_type in _STRING_TYPES:
            parts.append(_quote_string(tok.text))
        elif tok.token_type == TokenType.IDENTIFIER:
            if "\x00" in tok.text:
                raise QueryRefused("a quoted name holds a NUL byte")
            parts.append(_quote_identifier(tok.text))
        elif _PLAIN.match(tok.text) or tok.text in _OPERATORS:
            parts.append(tok.text)
        elif tok.token_type != TokenType.VAR and _KEYWORDS.match(tok.text):
            parts.append(" ".join(tok.text.split()))
        else:
            raise QueryRefused(f"unsupported token {tok.text[:40]!r}: use plain SQL names, numbers, "
                               "'strings' and operators")
    return " ".join(parts)


def _check_calls(tokens) -> None:
    for tok, nxt in zip(tokens, tokens[1:]):
        if nxt.token_type != TokenType.L_PAREN or tok.token_type in _STRING_TYPES:
            continue
        if tok.token_type != TokenType.IDENTIFIER and not _NAME.match(tok.text):
            continue  # an operator or ")" before "(": not a call by name
        if tok.token_type != TokenType.IDENTIFIER and tok.text.upper() in _NOT_CALLS:
            continue
        if not is_allowed_function(tok.text):
            raise QueryRefused(f"function {tok.text[:60]!r} is not allowed: the query API runs pure SQL "
                               "functions over visitwire's tables only (no table functions, files, URLs, "
                               "dictionaries or other servers)")


def _check_tree(root: exp.Expression, database: str) -> None:
    query_types = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
    if not isinstance(root, query_types):
        raise QueryRefused("read-only API: only SELECT statements (with WITH, UNION, subqueries) are accepted")
    ctes = {cte.alias_or_name.lower() for cte in root.find_all(exp.CTE)}
    for node in root.walk():
        if isinstance(node, (exp.Command, exp.Into)):
            raise QueryRefused("read-only API: only SELECT statements are accepted")
        if node.args.get("settings"):
            raise QueryRefused("SETTINGS are not accepted: the API sets the query's limits itself")
        if node.args.get("format"):
            raise QueryRefused("FORMAT is not accepted: the API answers JSON rows")
        if isinstance(node, exp.Table):
            _check_table(node, ctes, database)


def _check_table(table: exp.Table, ctes: set[str], database: str) -> None:
    if not isinstance(table.this, exp.Identifier):
        raise QueryRefused("table functions are not allowed: read visitwire's tables by name")
    name, db = table.name, table.db
    if table.catalog or (db and db != database):
        raise QueryRefused(f"table {'.'.join(p for p in (table.catalog, db, name) if p)!r} is outside the "
                           f"visitwire database: read {', '.join(sorted(TABLES))}")
    if name in TABLES or (not db and name.lower() in ctes):
        return
    raise QueryRefused(f"table {name!r} is not a visitwire table: read {', '.join(sorted(TABLES))}")


def police(sql: object, database: str = "default") -> str:
    """The canonical text of `sql` when it is one SELECT over visitwire's tables; else QueryRefused."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused('body must be JSON {"sql": "SELECT ..."} with a non-empty string')
    if len(sql) > 100_000:
        raise QueryRefused("the SQL is longer than 100,000 characters")
    try:
        tokens = ClickHouse().tokenize(sql)
    except (TokenError, ValueError) as e:
        raise QueryRefused(f"the SQL does not tokenize: {str(e).splitlines()[0][:200]}") from None
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    if not tokens:
        raise QueryRefused('body must be JSON {"sql": "SELECT ..."} with a non-empty string')
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        raise QueryRefused("one statement per request: remove the ';' between statements")
    _check_calls(tokens)
    text = _canonical(tokens)
    try:
        trees = parse(text, read="clickhouse")
    except (ParseError, TokenError) as e:
        raise QueryRefused(f"the SQL does not parse: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise QueryRefused("the SQL nests too deeply") from None
    if len(trees) != 1 or trees[0] is None:
        raise QueryRefused("one statement per request")
    _check_tree(trees[0], database)
    return text
