"""Owns the model and its paged KV cache; turns a scheduled Batch into one forward and greedy tokens."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import psutil
import torch

from llmbench.agent.attention import AttentionMetadata
from llmbench.agent.model.config import ModelConfig
from llmbench.agent.engine.cuda_graphs import DecodeGraphs
from llmbench.agent.model.llama import Attention, LlamaForCausalLM
from llmbench.agent.engine.scheduler import Batch, Sequence
from llmbench.agent.engine.slots import block_tables, decode_slots
from llmbench.agent.engine.types import EngineConfig

log = logging.getLogger(__name__)


def kv_block_bytes(mc: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    return 2 * mc.num_layers * block_size * mc.kv_size * dtype.itemsize


def workspace_bytes(mc: ModelConfig, cfg: EngineConfig, dtype: torch.dtype) -> int:
    """Generous bound on the activations of one step of max_step_tokens tokens."""
    per_token = 4 * mc.hidden_size + 3 * (mc.q_size + 2 * mc.kv_size) + 4 * mc.intermediate_size
    logits = cfg.max_batch * mc.vocab_size * (dtype.itemsize + 8)
    return int(1.2 * (cfg.max_step_tokens * per_token * dtype.itemsize + logits)) + (256 << 20)


def plan_kv_blocks(mc: ModelConfig, cfg: EngineConfig, device: torch.device, dtype: torch.dtype,
                   kv_dtype: torch.dtype, max_context: int) -> int:
    block_bytes = kv_block_bytes(mc, cfg.block_size, kv_dtype)
    workspace = workspace_bytes(mc, cfg, dtype)
    if cfg.num_kv_blocks > 0:
        check_kv_fits(cfg.num_kv_blocks, block_bytes, workspace, device)
        log.info("KV cache: %d blocks of %d tokens (%d tokens, %.2f GiB), as configured", cfg.num_kv_blocks,
                 cfg.block_size, cfg.num_kv_blocks * cfg.block_size, cfg.num_kv_blocks * block_bytes / 2**30)
        return cfg.num_kv_blocks
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget = min(int(total * cfg.memory_fraction) - (total - free), free) - workspace
        why = (f"{cfg.memory_fraction:.2f} of {total / 2**30:.1f} GiB minus {(total - free) / 2**30:.1f} "
               f"GiB in use minus {workspace / 2**30:.2f} GiB workspace")
        blocks = max(budget, 0) // block_bytes
    else:
        available = psutil.virtual_memory().available
        budget = int(available * cfg.memory_fraction) - workspace
        cap = cfg.max_batch * -(-max_context // cfg.block_size)
        blocks = min(max(budget, 0) // block_bytes, cap)
        why = (f"{cfg.memory_fraction:.2f} of {available / 2**30:.1f} GiB available host memory, "
               f"capped at max_batch {cfg.max_batch} x max_context {max_context}")
    if cfg.max_kv_blocks and blocks > cfg.max_kv_blocks:
        blocks = cfg.max_kv_blocks
        why += f", capped at {cfg.max_kv_blocks} blocks for the job"
    if blocks <= 0:
        raise RuntimeError(f"no memory left for the KV cache ({why}); lower max_step_tokens/max_batch "
                           f"or raise memory_fraction")
    log.info("KV cache: %d blocks of %d tokens (%d tokens, %.2f GiB): %s", blocks, cfg.block_size,
             blocks * cfg.block_size, blocks * block_bytes / 2**30, why)
    if blocks * cfg.block_size < max_context and not cfg.max_kv_blocks:
        log.warning("the KV cache holds fewer tokens than max_context %d: longer queries get TOO_LONG",
                    max_context)
    return blocks


def check_kv_fits(num_blocks: int, block_bytes: int, workspace: int, device: torch.device) -> None:
    """Refuse a configured KV cache larger than the memory left, before allocating it."""
    if device.type == "cuda":
        available, where = torch.cuda.mem_get_info(device)[0], f"GPU memory on {device}"
    else:
        available, where = psutil.virtual_memory().available, "host memory"
    asked = (num_blocks + 1) * block_bytes  # the runner allocates one scratch block more
    if asked > available - workspace:
        raise ValueError(f"--num-kv-blocks {num_blocks} asks for {asked} bytes ({asked / 2**30:.2f} GiB) of KV "
                         f"cache, but only {available} bytes ({available / 2**30:.2f} GiB) of {where} are "
                         f"available, {workspace / 2**30:.2f} GiB of it kept for one step's activations")


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, max_context: int = 0,
                 kv_dtype: torch.dtype | None = None):
        self.model = model
        self.block_size = block_size
        self.max_context = max_context or model.cfg.max_position
        mc = model.cfg
        weight = model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.pin = self.device.type == "cuda"
        self.num_blocks = num_blocks
        # One block more than the allocator hands out: padded CUDA-graph rows write there.
        shape = (num_blocks + 1, block_size, mc.num_kv_heads, mc.head_dim)
        kv_dtype = kv_dtype or self.dtype
        for attn in (m for m in model.modules() if isinstance(m, Attention)):  # one per layer
            attn.k_cache = torch.zeros(shape, dtype=kv_dtype, device=self.device)
            attn.v_cache = torch.zeros(shape, dtype=kv_dtype, device=self.device)
        self.graphs: DecodeGraphs | None = None
        self.device_s = 0.0  # the last collected step's device time: first kernel to last (CUDA), or its forward (CPU)
        self._last_tokens = torch.empty(0, dtype=torch.int64, device=self.device)  # the last launch's sampled ids

    def capture_decode_graphs(self, max_batch: int) -> None:
        """After warm-up, on CUDA: decode-only steps of up to max_batch sequences replay graphs."""
        self.graphs = DecodeGraphs(self.model, max_batch, -(-self.max_context // self.block_size),
                                   self.block_size, scratch_slot=self.num_blocks * self.block_size)
        self.graphs.capture()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        if self.pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def prepare(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        bs = self.block_size
        ids, positions, slots = [], [], []
        for seq, n in batch.prefill:
            start = seq.num_cached
            ids.extend(seq.tokens[start:start + n])
            pos = np.arange(start, start + n, dtype=np.int64)
            positions.append(pos)
            slots.append(np.asarray(seq.block_table, dtype=np.int64)[pos // bs] * bs + pos % bs)
        if batch.decode:
            pos, slot = decode_slots(batch.decode, bs)
            ids.extend(s.tokens[-1] for s in batch.decode)
            positions.append(pos)
            slots.append(slot)
        positions_np = np.concatenate(positions)
        num_prefill = sum(n for _, n in batch.prefill)
        meta = AttentionMetadata(slot_mapping=self._to_device(np.concatenate(slots)),
                                 num_prefill_tokens=num_prefill, num_decode_tokens=len(batch.decode))
        rows = []
        if batch.prefill:
            seqs = [s for s, _ in batch.prefill]
            q_lens = np.array([n for _, n in batch.prefill], dtype=np.int32)
            seq_lens = np.array([s.num_cached + n for s, n in batch.prefill], dtype=np.int32)
            cu_q = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
            meta.cu_seqlens_q = self._to_device(cu_q)
            meta.cu_seqlens_k = self._to_device(np.concatenate([[0], np.cumsum(seq_lens)]).astype(np.int32))
            meta.seq_lens = self._to_device(seq_lens)
            meta.prefill_block_tables = self._to_device(block_tables(seqs))
            meta.max_seqlen_q, meta.max_seqlen_k = int(q_lens.max()), int(seq_lens.max())
            rows = [int(cu_q[i + 1]) - 1 for i, (s, n) in enumerate(batch.prefill)
                    if s.num_cached + n == s.prompt_len]
        if batch.decode:
            meta.context_lens = self._to_device(np.array([len(s.tokens) for s in batch.decode],
                                                         dtype=np.int32))
            meta.decode_block_tables = self._to_device(block_tables(batch.decode))
            rows.extend(range(num_prefill, num_prefill + len(batch.decode)))
        return (self._to_device(np.array(ids, dtype=np.int64)), self._to_device(positions_np), meta,
                self._to_device(np.array(rows, dtype=np.int64)))

    def run(self, batch: Batch) -> list[int]:
        """One forward, waited for; returns the greedy next token of every sequence in batch.sampling()."""
        return self.collect(self.launch(batch))

    @torch.inference_mode()
    def launch(self, batch: Batch) -> Launched:
        """Queues one forward and its greedy sampling on the device without waiting for it. Decode inputs
        still PENDING are the previous launch's sampled ids, read on the device."""
        n = len(batch.decode)
        if self.graphs is not None and not batch.prefill and self.graphs.fits(n):
            graph = self.graphs.stage(batch.decode)
            self._feed_pending(self.graphs.ids, 0, batch.decode)
            begun = self._begin()
            logits = self.graphs.replay(graph, n)
        else:
            input_ids, positions, meta, rows = self.prepare(batch)
            self._feed_pending(input_ids, meta.num_prefill_tokens, batch.decode)
            begun = self._begin()
            logits = self.model(input_ids, positions, meta, rows)
        banned = [(i, t) for i, s in enumerate(batch.sampling()) for t in s.banned_ids()]
        if banned:
            r, c = zip(*banned)
            logits[list(r), list(c)] = float("-inf")
        tokens = logits.argmax(dim=-1)
        self._last_tokens = tokens
        if self.device.type != "cuda":
            return Launched(batch, tokens, begun, time.perf_counter())
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        ended = torch.cuda.Event(enable_timing=True)
        ended.record()
        return Launched(batch, host, begun, ended)

    def collect(self, launched: Launched) -> list[int]:
        """Waits for a launched step; its sampled ids (and self.device_s, its device time)."""
        begun, ended = launched.begun, launched.ended
        if isinstance(ended, torch.cuda.Event) and isinstance(begun, torch.cuda.Event):
            ended.synchronize()
            self.device_s = begun.elapsed_time(ended) / 1e3
        elif isinstance(ended, float) and isinstance(begun, float):
            self.device_s = ended - begun
        return launched.tokens.tolist()

    def _feed_pending(self, input_ids: torch.Tensor, offset: int, decode: list[Sequence]) -> None:
        """Decode rows whose input token is still PENDING take it from the previous launch's output."""
        pending = [(offset + i, s.sample_row) for i, s in enumerate(decode) if s.unsettled]
        if not pending:
            return
        rows, source = np.array(pending, dtype=np.int64).T
        input_ids.index_copy_(0, self._to_device(rows.copy()),
                              self._last_tokens.index_select(0, self._to_device(source.copy())))

    def _begin(self) -> torch.cuda.Event | float:
        """Marks where the step's device work starts: its inputs are staged, its first kernel is next."""
        if self.device.type == "cuda":
            begun = torch.cuda.Event(enable_timing=True)
            begun.record()
            return begun
        return time.perf_counter()


@dataclass
class Launched:
    """A step queued on the device."""
    batch: Batch
    tokens: torch.Tensor  # its sampled ids; on CUDA in pinned host memory, valid once `ended` has passed
    begun: torch.cuda.Event | float  # before its first kernel (CPU: a perf_counter time)
    ended: torch.cuda.Event | float  # after its ids reached the host (CPU: a perf_counter time)
