"""Prometheus text exposition format (version 0.0.4), as vLLM's ``/metrics`` serves it (pure parser).

Only what the checks read: samples with labels and float values; ``# HELP``/``# TYPE`` lines are kept
for the type. Reference: prometheus.io/docs/instrumenting/exposition_formats.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# vLLM renamed the KV cache gauge (vllm-project/vllm#18354, v0.9): accept either.
KV_CACHE_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREEMPTIONS = "vllm:num_preemptions_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
REQUEST_SUCCESS = "vllm:request_success_total"

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class MetricsError(ValueError):
    """The text is not Prometheus exposition format: names the line."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Metrics:
    """Parsed ``/metrics``: samples by name, and each family's ``# TYPE``."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.samples

    def total(self, name: str) -> float | None:
        """Sum of a metric over all label sets (every model, engine), ``None`` when absent.

        Example::

            >>> parse_prometheus('a_total{m="x"} 1\\na_total{m="y"} 2\\n').total("a_total")
            3.0
        """
        if name not in self.samples:
            return None
        return sum(s.value for s in self.samples[name])

    def first_of(self, names: tuple[str, ...]) -> tuple[str, float] | None:
        """The first of ``names`` present, with its total: for metrics renamed between releases."""
        for n in names:
            v = self.total(n)
            if v is not None:
                return n, v
        return None

    def labels_of(self, name: str) -> dict[str, str]:
        """Labels of an info-style metric's first sample (``vllm:cache_config_info``); empty when absent."""
        return dict(self.samples[name][0].labels) if self.samples.get(name) else {}

    @property
    def is_vllm(self) -> bool:
        return any(n.startswith("vllm:") for n in self.samples)


def _unescape(value: str) -> str:
    return value.replace(r"\\", "\x00").replace(r"\"", '"').replace(r"\n", "\n").replace("\x00", "\\")


def _float(text: str, lineno: int) -> float:
    low = text.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    try:
        return float(text)  # accepts "NaN" too, as the format does
    except ValueError:
        raise MetricsError(f"line {lineno}: value {text!r} is not a number") from None


def parse_labels(text: str, lineno: int = 0) -> dict[str, str]:
    """Parse ``a="1",b="x\\"y"`` into a dict.

    Example::

        >>> parse_labels('model_name="m",engine="0"')
        {'model_name': 'm', 'engine': '0'}
    """
    labels: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise MetricsError(f"line {lineno}: bad label set at {text[pos : pos + 40]!r}")
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def parse_prometheus(text: str) -> Metrics:
    """Parse the text exposition format; raise ``MetricsError`` naming the first bad line.

    Example::

        >>> m = parse_prometheus('# TYPE vllm:x gauge\\nvllm:x{m="a"} 0.0\\n')
        >>> m.total("vllm:x"), m.types["vllm:x"]
        (0.0, 'gauge')
    """
    out = Metrics()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise MetricsError(f"line {lineno}: not a sample: {line[:80]!r}")
        name, labels, value = m.group(1), m.group(2), m.group(3)
        sample = Sample(name, parse_labels(labels, lineno) if labels else {}, _float(value, lineno))
        out.samples.setdefault(name, []).append(sample)
    if not out.samples:
        raise MetricsError("no samples at all (empty body, or not Prometheus text)")
    return out
