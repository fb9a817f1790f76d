"""Merge Prometheus text expositions of several processes into one (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

MAX_GAUGES = frozenset({"ferry_model_ready"})
"""Gauges that say a state of the whole server rather than count something: the largest wins."""

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(texts: Sequence[bytes]) -> bytes:
    """One exposition whose counters, histograms and gauges are the sums of the inputs'
    (``_created`` timestamps: the earliest; gauges in ``MAX_GAUGES``: the largest)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                previous = samples.get(key)
                if previous is None:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(previous, sample.value)
                elif family.name in MAX_GAUGES:
                    samples[key] = max(previous, sample.value)
                else:
                    samples[key] = previous + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
