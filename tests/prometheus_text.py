"""Prometheus' text exposition format read back strictly: any line that is not the format fails, and
scrapes over HTTP check the content type."""
from __future__ import annotations

import re
import urllib.request

from llmbench.common.prometheus import CONTENT_TYPE

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
METRICS_LINE = re.compile(r"Prometheus metrics on (http://\S+/metrics)")


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """(TYPE per family, value per (sample name, labels)); fails on any line that is not the format."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return types, samples


def scrape(url: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        return parse(reply.read().decode())


def value(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def histogram(samples: dict, name: str, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
    """(buckets as (le, cumulative count), sum, count) of one histogram series, checked as Prometheus
    reads it: bounds increasing, counts never falling, the +Inf bucket equal to _count."""
    want = set(labels.items())
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
                     if n == name + "_bucket" and want <= set(ls) - {("le", dict(ls)["le"])})
    assert buckets and buckets[-1][0] == float("inf"), f"{name}{labels}: no +Inf bucket"
    counts = [n for _, n in buckets]
    assert counts == sorted(counts), f"{name}{labels}: buckets not cumulative: {buckets}"
    count = value(samples, name + "_count", **labels)
    assert counts[-1] == count, f"{name}{labels}: +Inf bucket {counts[-1]} != _count {count}"
    return buckets, value(samples, name + "_sum", **labels), count
