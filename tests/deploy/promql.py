"""The metric names a PromQL expression reads, for checking them against a live node's /metrics.

Not a parser: it removes what cannot be a metric name (strings, label matchers, range and subquery
brackets, the label lists of ``by``/``without``/``on``/``ignoring``/``group_*``), then keeps the
identifiers that are not called like functions and are not keywords. ``promtool`` parses the same
expressions for real (``test_prometheus.py``, ``test_grafana.py``), so what this reads is valid PromQL.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
#: an identifier not inside another token (``5m``, ``0.99``, ``$__rate_interval``), and whether a
#: ``(`` follows it (a function or an aggregation)
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"inf", "nan", "Inf", "NaN"}
)


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1) not in _KEYWORDS
    }
