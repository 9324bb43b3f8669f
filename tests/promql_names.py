"""The metric names a PromQL expression selects, found by a small lexer of our own.

Enough of PromQL (prometheus.io/docs/prometheus/latest/querying/basics/) for alert rules
and dashboards: string literals, label matchers in braces, range and subquery brackets,
numbers and durations, the grouping modifiers whose parenthesised lists hold label names
(by, without, on, ignoring, group_left, group_right), keywords, and function or
aggregation names (an identifier followed by "(", or an aggregation by its grouping
clause). Every other identifier is a metric
name; so is the value of a `__name__="..."` matcher. Grafana's variables ($__rate_interval,
${var}) are not PromQL: `grafana_expr` replaces the ones the dashboard uses.

tests/test_prometheus.py also sends each expression to a real Prometheus, which refuses
one that does not parse, so a lexer mistake on a malformed expression cannot pass.
"""
from __future__ import annotations

import re

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_LABEL_LIST_MODIFIERS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregation operators: followed by "(" or by their grouping clause, `sum by (job) (...)`.
_AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                           "bottomk", "topk", "quantile", "limitk", "limit_ratio"})

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<brace>\{)
  | (?P<bracket>\[[^\]]*\])
  | (?P<number>\d[\w.]*|\.\d[\w.]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<lparen>\()
  | (?P<other>[^\s])
  | (?P<space>\s+)
""", re.VERBOSE)

_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)')""")


def _matching_brace(expr: str, start: int) -> int:
    """The index just past the "}" closing the "{" at `start`, skipping quoted strings."""
    i = start + 1
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            end = expr.index(c, i + 1)
            while c != "`" and expr[end - 1] == "\\" and expr[end - 2] != "\\":
                end = expr.index(c, end + 1)
            i = end + 1
            continue
        if c == "}":
            return i + 1
        i += 1
    raise ValueError(f"unclosed '{{' at {start} in {expr!r}")


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects (by name, or by a `__name__="..."` matcher)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m is not None, (expr, pos)  # `other` matches any non-space character
        kind = m.lastgroup
        assert kind is not None
        if kind == "brace":
            end = _matching_brace(expr, pos)
            tokens.append(("brace", expr[pos:end]))
            pos = end
            continue
        if kind != "space":
            tokens.append((kind, m.group()))
        pos = m.end()

    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][0] if i + 1 < len(tokens) else None
        following_text = tokens[i + 1][1].lower() if i + 1 < len(tokens) else ""
        if kind == "brace":
            for m in _NAME_MATCHER.finditer(text):
                names.add(m.group(1) if m.group(1) is not None else m.group(2))
        elif kind == "ident" and text.lower() in _LABEL_LIST_MODIFIERS:
            if following == "lparen":  # skip the label names up to the closing ")"
                i += 2
                while i < len(tokens) and tokens[i][1] != ")":
                    i += 1
        elif kind == "ident" and text.lower() in _AGGREGATIONS and following_text in ("by", "without"):
            pass  # the clause's label list is skipped when its modifier comes round
        elif kind == "ident" and following != "lparen" and text.lower() not in _KEYWORDS:
            names.add(text)
        i += 1
    return names


# The Grafana variables the dashboard uses, and what a query sent to Prometheus gets instead.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def grafana_expr(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced: plain PromQL. ValueError if it
    uses a variable this does not know (the dashboard must not grow one unchecked)."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr
