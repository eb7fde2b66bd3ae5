"""Reading LoadGen's detail log while a test runs: records, and the generated sample count."""
from __future__ import annotations

import asyncio
import json

import pytest

from llmbench.coordinator.loadgen.detail_log import DETAIL_FILE, generated_sample_count, records, wait_generated_count


def mllog(key: str, value) -> str:
    return ":::MLLOG " + json.dumps({"key": key, "value": value, "time_ms": 1.0}) + "\n"


def generated(queries, per_query=1) -> str:
    return mllog("generated_query_count", queries) + mllog("generated_samples_per_query", per_query)


def test_records_skip_noise_and_a_line_cut_short(tmp_path):
    (tmp_path / DETAIL_FILE).write_text(mllog("effective_scenario", "Server") + "not a record\n"
                                        + generated(561) + ':::MLLOG {"key": "gene')
    keys = ["effective_scenario", "generated_query_count", "generated_samples_per_query"]
    assert [r["key"] for r in records(tmp_path)] == keys
    assert generated_sample_count(tmp_path) == 561


def test_offline_is_one_query_of_every_sample(tmp_path):
    (tmp_path / DETAIL_FILE).write_text(generated(1, 13368))
    assert generated_sample_count(tmp_path) == 13368


def test_missing_file_or_count_is_none(tmp_path):
    assert generated_sample_count(tmp_path) is None
    (tmp_path / DETAIL_FILE).write_text(mllog("effective_scenario", "Offline") + mllog("generated_query_count", 1))
    assert generated_sample_count(tmp_path) is None  # the samples per query are not written yet


def test_wait_returns_once_loadgen_has_logged_the_count(tmp_path):
    path = tmp_path / DETAIL_FILE

    async def scenario() -> int:
        waiter = asyncio.ensure_future(wait_generated_count(tmp_path))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        path.write_text(mllog("effective_scenario", "Server"))
        await asyncio.sleep(0.7)
        assert not waiter.done()
        with path.open("a") as f:
            f.write(generated(600))
        return await asyncio.wait_for(waiter, 10)
    assert asyncio.run(scenario()) == 600


@pytest.mark.parametrize("value", ["600", None, 1.5])
def test_a_malformed_count_is_not_taken(tmp_path, value):
    (tmp_path / DETAIL_FILE).write_text(generated(value))
    assert generated_sample_count(tmp_path) is None
