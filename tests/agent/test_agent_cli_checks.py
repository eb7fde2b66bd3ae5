"""Flag checks of `llmbench agent`, `generate` and `bench`: every bad value is refused up front with one
line naming the flag and its value; KV sizes that cannot fit are refused before anything is allocated."""
import argparse
import io
import json
import re
import subprocess
import sys
import time

import psutil
import pytest
import torch

from llmbench.agent.commands.agent import add_engine_arguments, engine_config
from llmbench.agent.model.config import PRESETS
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.commands.generate import read_prompts
from llmbench.common.ports import split_host_port
from llmbench.agent.engine.runner import check_kv_fits, kv_block_bytes
from llmbench.agent.engine.types import EngineConfig
from llmbench.cli.main import main

LLMBENCH = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


def error_of(capsys, *argv: str) -> str:
    """The one error line of an in-process `llmbench ARGV` that must fail before doing any work."""
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    prefix = f"llmbench {argv[0]}: error: "
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "listening on" not in out  # refused before binding
    return lines[0].removeprefix(prefix)


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


@pytest.mark.parametrize("flags, message", [
    (["--memory-fraction", "5"], "--memory-fraction must be in (0, 1], got 5.0"),
    (["--memory-fraction", "0"], "--memory-fraction must be in (0, 1], got 0.0"),
    (["--tpot-headroom", "1.5"], "--tpot-headroom must be in (0, 1], got 1.5"),
    (["--tokens-per-s", "0"], "--tokens-per-s must be > 0, got 0.0"),
    (["--tokens-per-s", "-100"], "--tokens-per-s must be > 0, got -100.0"),
    (["--tokens-per-s", "nan"], "--tokens-per-s must be > 0, got nan"),
    (["--num-kv-blocks", "-1"], "--num-kv-blocks must be >= 0, got -1"),
    (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["--max-step-tokens", "-3"], "--max-step-tokens must be >= 1, got -3"),
    (["--block-size", "0"], "--block-size must be >= 1, got 0"),
    (["--grace", "-1"], "--grace must be >= 0, got -1.0"),
    (["--stall-timeout", "0"], "--stall-timeout must be > 0, got 0.0"),
    (["--port", "70000"], "--port must be a port number in 0..65535, got 70000"),
    (["--port", "-1"], "--port must be a port number in 0..65535, got -1"),
    (["--health-port", "65536"], "--health-port must be a port number in 0..65535, got 65536"),
    (["--metrics-port", "-5"], "--metrics-port must be a port number in 0..65535, got -5"),
])
def test_agent_names_the_bad_flag_and_its_value(capsys, flags, message):
    assert error_of(capsys, "agent", "--engine", "simulated", *flags) == message


def test_agent_names_every_bad_flag_at_once(capsys):
    err = error_of(capsys, "agent", "--model", "tiny", "--memory-fraction", "5", "--tokens-per-s", "0",
                   "--num-kv-blocks", "-1", "--grace", "-1")
    assert err.split("; ") == ["--tokens-per-s must be > 0, got 0.0", "--memory-fraction must be in (0, 1], got 5.0",
                               "--num-kv-blocks must be >= 0, got -1", "--grace must be >= 0, got -1.0"]


def test_agent_block_size_larger_than_max_context_is_refused_before_binding(capsys):
    t = time.monotonic()
    err = error_of(capsys, "agent", "--model", "tiny", "--port", "0", "--block-size", "100000")
    assert err == "--block-size must be at most the max context 4096 of model tiny, got 100000"
    assert time.monotonic() - t < 10  # before: 25 s spent allocating 12 GiB


def test_block_size_bounds():
    PagedEngine(EngineConfig(model="tiny", device="cpu", block_size=4096))  # a whole max context: allowed
    with pytest.raises(ValueError, match="--block-size must be at most the max context 4096"):
        PagedEngine(EngineConfig(model="tiny", device="cpu", block_size=4097))
    with pytest.raises(ValueError, match="--block-size must be at most the max context 100 "):
        PagedEngine(EngineConfig(model="tiny", device="cpu", block_size=128, max_context=100))


def test_flash_attention_needs_a_256_multiple_block_size(capsys):
    err = error_of(capsys, "agent", "--model", "tiny", "--attention", "flash", "--block-size", "16")
    assert err.startswith("--block-size must be a multiple of 256 with --attention flash") and err.endswith("got 16")
    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    cfg = engine_config(p.parse_args(["--model", "tiny", "--attention", "flash", "--block-size", "512"]))
    assert (cfg.attention, cfg.block_size) == ("flash", 512)
    for name in ("auto", "triton", "torch"):  # auto falls back to triton; triton and torch take any size
        assert engine_config(p.parse_args(["--model", "tiny", "--attention", name, "--block-size", "7"])).block_size == 7


def test_configured_kv_cache_larger_than_memory_is_refused_before_allocating():
    asked = (10 ** 9 + 1) * kv_block_bytes(PRESETS["tiny"], 16, torch.float32)
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", num_kv_blocks=10 ** 9))
    with pytest.raises(ValueError) as exc:
        engine.start()
    message = str(exc.value)
    assert message.startswith(f"--num-kv-blocks 1000000000 asks for {asked} bytes")
    available = int(re.search(r"but only (\d+) bytes \([\d.]+ GiB\) of host memory are available", message)[1])
    assert abs(available - psutil.virtual_memory().available) < 2 << 30
    fits = PagedEngine(EngineConfig(model="tiny", device="cpu", num_kv_blocks=64))
    fits.start()
    try:
        assert fits.stats().kv_blocks_total == 64
    finally:
        fits.stop()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_configured_kv_cache_larger_than_gpu_memory_is_refused():
    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(ValueError, match="of GPU memory on cuda"):
        check_kv_fits(free // (1 << 20), 1 << 20, 0, torch.device("cuda"))
    check_kv_fits(free // (4 << 20), 1 << 20, 0, torch.device("cuda"))


def test_agent_subprocess_refuses_a_kv_cache_larger_than_memory():
    t = time.monotonic()
    r = subprocess.run([*LLMBENCH, "agent", "--model", "tiny", "--port", "0", "--num-kv-blocks", "1000000000"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("llmbench agent: error: --num-kv-blocks 1000000000 asks for 8192000008192 bytes"), r.stderr
    assert "can't allocate memory" not in r.stderr
    assert time.monotonic() - t < 60


@pytest.mark.parametrize("address, message", [
    ("localhost", "agent 'localhost': expected HOST:PORT ([ADDR]:PORT for IPv6)"),
    ("::1", "agent '::1': expected HOST:PORT ([ADDR]:PORT for IPv6)"),
    (":50051", "agent ':50051': expected HOST:PORT ([ADDR]:PORT for IPv6)"),
    ("localhost:http", "agent 'localhost:http': port 'http' is not a port number"),
    ("localhost:0", "agent 'localhost:0': port '0' is not a port number"),
])
def test_generate_checks_the_agent_address_at_once(capsys, address, message):
    t = time.monotonic()
    assert error_of(capsys, "generate", "--agent", address) == message
    assert time.monotonic() - t < 2  # before: a 5 s wait, then "does not answer"


def test_generate_address_forms():
    assert split_host_port("127.0.0.1:50051", "x") == ("127.0.0.1", 50051)
    assert split_host_port("agent-0.llmbench:1", "x") == ("agent-0.llmbench", 1)
    assert split_host_port("[::1]:65535", "x") == ("::1", 65535)


def test_generate_refuses_the_engine_flags_given_with_agent(capsys):
    err = error_of(capsys, "generate", "--agent", "127.0.0.1:1", "--max-batch", "256", "--dtype", "float32")
    assert err.startswith("--dtype, --max-batch: engine flags apply in-process only")  # 256 is the default: still refused
    assert "--block-size" not in err and "--model" not in err  # only what was passed
    assert error_of(capsys, "generate", "--agent", "127.0.0.1:1", "--model", "tiny").startswith("--model: ")


@pytest.mark.parametrize("flags, message", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--connect-timeout", "0"], "--connect-timeout must be > 0, got 0.0"),
    (["--connect-timeout", "-2"], "--connect-timeout must be > 0, got -2.0"),
])
def test_generate_names_the_bad_flag(capsys, flags, message):
    assert error_of(capsys, "generate", "--engine", "simulated", *flags) == message


def test_generate_refuses_duplicate_ids_with_their_lines(capsys, tmp_path):
    lines = ['{"id": "a", "tokens": [1]}', '{"tokens": [2]}', '{"id": "b", "tokens": [3]}', '{"id": "a", "text": "x"}']
    with pytest.raises(ValueError, match=r'^line 4: id "a" repeats the id of line 1; ids must be unique$'):
        read_prompts(io.StringIO("\n".join(lines)))
    # An id left out is its line number: line 2's prompt is id 2.
    with pytest.raises(ValueError, match=r"^line 3: id 2 repeats the id of line 2"):
        read_prompts(io.StringIO('{"id": 1, "tokens": [1]}\n{"tokens": [1]}\n{"id": 2, "tokens": [1]}\n'))
    ok = read_prompts(io.StringIO('{"id": 1, "tokens": [1]}\n{"id": "1", "tokens": [1]}\n{"id": [1], "tokens": [1]}\n'))
    assert [p.id for p in ok] == [1, "1", [1]]
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": 7, "tokens": [1]}\n\n{"id": 7, "tokens": [2]}\n')
    err = error_of(capsys, "generate", "--engine", "simulated", "--input", str(path))
    assert err == "line 3: id 7 repeats the id of line 1; ids must be unique"


def test_generate_help_shows_the_schema_and_defaults(capsys):
    text = help_text(capsys, "generate")
    assert '{"id": ID, "tokens": [token ids...]} or {"id": ID, "text": "..."}' in text
    assert "--max-new-tokens MAX_NEW_TOKENS (default: 128)" in text
    assert "seconds to wait for --agent to answer (default: 5)" in text
    assert "most queries running at once (default: 256)" in text


def test_agent_help_shows_defaults(capsys):
    text = help_text(capsys, "agent")
    for shown in ("port to bind; 0 picks a free one (default: 50051)", "after SIGTERM (default: 10)",
                  "pings stop (default: 60)", "most queries running at once (default: 256)",
                  "most tokens in one engine step (default: 8192)", "(default: 0.9)", "(default: 16)",
                  "(default: 127.0.0.1, loopback only)"):
        assert shown in text


def test_bench_help_shows_defaults(capsys):
    text = help_text(capsys, "bench")
    for shown in ("prompts to run (default: 64 on CPU, 2000 on GPU)", "forced (default: 128)",
                  "(default: 512 on GPU, 64 on CPU)", "(default: tiny)"):
        assert shown in text


@pytest.mark.parametrize("flags, message", [
    (["--samples", "0"], "--samples must be >= 1, got 0"),
    (["--samples", "-4"], "--samples must be >= 1, got -4"),
    (["--prompt-len", "0"], "--prompt-len must be >= 1, got 0"),
    (["--output-len", "0"], "--output-len must be >= 1, got 0"),
    (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["--max-step-tokens", "0"], "--max-step-tokens must be >= 1, got 0"),
    (["--memory-fraction", "1.5"], "--memory-fraction must be in (0, 1], got 1.5"),
    (["--hf-batch", "0"], "--hf-batch must be >= 1, got 0"),
    (["--hf-samples", "0"], "--hf-samples must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_bench_zero_is_an_error_like_other_bad_values(capsys, flags, message):
    assert error_of(capsys, "bench", *flags) == message


def test_bench_runs_what_it_was_given(capsys):
    assert main(["bench", "--device", "cpu", "--samples", "3", "--prompt-len", "12", "--output-len", "4",
                 "--max-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"samples\s+3 \(prompt mean 12 tokens, 4 output tokens forced\)", out), out


def test_generate_in_process_uses_defaults_for_flags_not_given(capsys, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": i, "tokens": [1, 2, 3]}) + "\n" for i in range(3)))
    assert main(["generate", "--engine", "simulated", "--input", str(path), "--max-new-tokens", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2] and all(len(r["tokens"]) == 3 for r in rows)
