"""Histograms observed in bulk show exactly what observing one by one shows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from stream_app.worker.metrics import observe_many


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for m in histogram.collect() for s in m.samples}


def test_observing_many_is_observing_each() -> None:
    amounts = [0.0, 0.5, 1.0, 1.0000001, 4.9, 5.0, 300.0, 10**9, 0.25]
    one, many = (
        Histogram(f"h{n}", "h", buckets=(1.0, 5.0, 300.0), registry=CollectorRegistry()) for n in (1, 2)
    )
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    observe_many(many, [])
    expected = {(name.replace("h1", "h2"), le): value for (name, le), value in samples(one).items()}
    got = samples(many)
    assert {k: v for k, v in got.items() if not k[0].endswith("_created")} == {
        k: v for k, v in expected.items() if not k[0].endswith("_created")
    }
