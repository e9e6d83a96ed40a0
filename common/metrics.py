"""A small Prometheus registry: counters, gauges and histograms with labels, text format 0.0.4.

Small on purpose: the hot path does a dict lookup and an add, nothing else.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

LabelValues = tuple[str, ...]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[LabelValues, float] = {}

    def inc(self, labels: LabelValues = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, labels: LabelValues = ()) -> float:
        return self.values.get(labels, 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def render(self) -> list[str]:
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in sorted(self.values.items())
        ]


class CallbackCounter(Counter):
    """A counter whose value is read from a callback at scrape time: for a count kept by
    another object (e.g. the store's evictions), which only ever grows."""

    def __init__(self, name: str, help: str, callback: Callable[[], float]) -> None:
        super().__init__(name, help)
        self.callback = callback

    def render(self) -> list[str]:
        self.values = {(): float(self.callback())}
        return super().render()


class Gauge(_Metric):
    """A gauge set directly or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (),
        callback: Callable[[], dict[LabelValues, float] | float] | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[LabelValues, float] = {}
        self.callback = callback

    def set(self, value: float, labels: LabelValues = ()) -> None:
        self.values[labels] = value

    def render(self) -> list[str]:
        values = self.values
        if self.callback is not None:
            got = self.callback()
            values = got if isinstance(got, dict) else {(): float(got)}
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in sorted(values.items())
        ]


DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def series_of(self, labels: LabelValues = ()) -> tuple[list[int], list[float]]:
        """The (bucket counts, [sum, count]) lists of one series, created if new: a hot path
        may hold them and observe as `observe` does (`counts[bisect_left(buckets, v)] += 1`,
        `sums[0] += v`, `sums[1] += 1`)."""
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0, 0.0])
        return s

    def observe(self, value: float, labels: LabelValues = ()) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0, 0.0])
        s[0][bisect.bisect_left(self.buckets, value)] += 1
        s[1][0] += value
        s[1][1] += 1

    def quantile(self, q: float, labels: LabelValues = ()) -> float:
        """Upper bucket bound holding the q-quantile (coarse, for reports)."""
        s = self.series.get(labels)
        if not s or not s[1][1]:
            return 0.0
        target, acc = q * s[1][1], 0
        for bound, n in zip(self.buckets + (math.inf,), s[0]):
            acc += n
            if acc >= target:
                return bound
        return math.inf

    def render(self) -> list[str]:
        out = self.header()
        for k, (counts, (total, n)) in sorted(self.series.items()):
            acc = 0
            for bound, c in zip(self.buckets + (math.inf,), counts):
                acc += c
                le = 'le="' + _num(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, k, le)} {acc}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, k)} {_num(total)}")
            out.append(f"{self.name}_count{_labels(self.labelnames, k)} {_num(n)}")
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self.metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        m = self._add(Counter(name, help, labelnames))
        assert isinstance(m, Counter)
        return m

    def counter_reading(self, name: str, help: str, callback: Callable[[], float]) -> CallbackCounter:
        """A counter read from `callback` at scrape time (`name` should end in _total)."""
        m = self._add(CallbackCounter(name, help, callback))
        assert isinstance(m, CallbackCounter)
        return m

    def gauge(
        self, name: str, help: str, labelnames: Sequence[str] = (),
        callback: Callable[[], dict[LabelValues, float] | float] | None = None,
    ) -> Gauge:
        m = self._add(Gauge(name, help, labelnames, callback))
        assert isinstance(m, Gauge)
        return m

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        m = self._add(Histogram(name, help, labelnames, buckets))
        assert isinstance(m, Histogram)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics.values():
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


def parse_text(text: str) -> dict[str, float]:
    """Parse exposition text into {'name{labels}': value}; for tests and reports."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out
