from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_EOS: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_QUERY: _ClassVar[ErrorCode]
    ERROR_CODE_TOO_LONG: _ClassVar[ErrorCode]
    ERROR_CODE_DUPLICATE_ID: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_EOS: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CANCELLED: FinishReason
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_QUERY: ErrorCode
ERROR_CODE_TOO_LONG: ErrorCode
ERROR_CODE_DUPLICATE_ID: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode

class Query(_message.Message):
    __slots__ = ("id", "prompt_tokens", "max_new_tokens", "min_new_tokens", "stop_token_ids", "ignore_eos", "tpot_limit_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    TPOT_LIMIT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    prompt_tokens: _containers.RepeatedScalarFieldContainer[int]
    max_new_tokens: int
    min_new_tokens: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    ignore_eos: bool
    tpot_limit_ms: float
    def __init__(self, id: _Optional[int] = ..., prompt_tokens: _Optional[_Iterable[int]] = ..., max_new_tokens: _Optional[int] = ..., min_new_tokens: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., ignore_eos: _Optional[bool] = ..., tpot_limit_ms: _Optional[float] = ...) -> None: ...

class QueryBatch(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ServeRequest(_message.Message):
    __slots__ = ("submit", "cancel")
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    submit: QueryBatch
    cancel: Cancel
    def __init__(self, submit: _Optional[_Union[QueryBatch, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class QueryError(_message.Message):
    __slots__ = ("id", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: ErrorCode
    message: str
    def __init__(self, id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("step", "ids", "counts", "tokens", "finished_ids", "finish_reasons", "errors")
    STEP_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    step: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    finished_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reasons: _containers.RepeatedScalarFieldContainer[FinishReason]
    errors: _containers.RepeatedCompositeFieldContainer[QueryError]
    def __init__(self, step: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[int]] = ..., finished_ids: _Optional[_Iterable[int]] = ..., finish_reasons: _Optional[_Iterable[_Union[FinishReason, str]]] = ..., errors: _Optional[_Iterable[_Union[QueryError, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "dtype", "device", "vocab_size", "max_context", "eos_token_ids", "parameters", "engine", "quantization", "kv_cache_dtype", "weight_scales", "activation_scales", "kv_scales")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SCALES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_SCALES_FIELD_NUMBER: _ClassVar[int]
    KV_SCALES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    device: str
    vocab_size: int
    max_context: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    parameters: int
    engine: str
    quantization: str
    kv_cache_dtype: str
    weight_scales: str
    activation_scales: str
    kv_scales: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., vocab_size: _Optional[int] = ..., max_context: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., parameters: _Optional[int] = ..., engine: _Optional[str] = ..., quantization: _Optional[str] = ..., kv_cache_dtype: _Optional[str] = ..., weight_scales: _Optional[str] = ..., activation_scales: _Optional[str] = ..., kv_scales: _Optional[str] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "node_name", "model", "ready", "kv_block_size", "kv_blocks_total", "kv_blocks_free", "kv_tokens_available", "memory_free_bytes", "memory_total_bytes", "memory_kind", "running", "waiting", "output_tokens_per_s", "prompt_tokens_per_s", "steps_total", "output_tokens_total", "queries_received_total", "queries_finished_total", "max_batch", "max_step_tokens", "timestamp", "step_running_s", "slowest_step_s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FREE_FIELD_NUMBER: _ClassVar[int]
    KV_TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_KIND_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUERIES_RECEIVED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FINISHED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STEP_RUNNING_S_FIELD_NUMBER: _ClassVar[int]
    SLOWEST_STEP_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    node_name: str
    model: ModelInfo
    ready: bool
    kv_block_size: int
    kv_blocks_total: int
    kv_blocks_free: int
    kv_tokens_available: int
    memory_free_bytes: int
    memory_total_bytes: int
    memory_kind: str
    running: int
    waiting: int
    output_tokens_per_s: float
    prompt_tokens_per_s: float
    steps_total: int
    output_tokens_total: int
    queries_received_total: int
    queries_finished_total: int
    max_batch: int
    max_step_tokens: int
    timestamp: float
    step_running_s: float
    slowest_step_s: float
    def __init__(self, agent_id: _Optional[str] = ..., node_name: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., ready: _Optional[bool] = ..., kv_block_size: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_free: _Optional[int] = ..., kv_tokens_available: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_kind: _Optional[str] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., output_tokens_per_s: _Optional[float] = ..., prompt_tokens_per_s: _Optional[float] = ..., steps_total: _Optional[int] = ..., output_tokens_total: _Optional[int] = ..., queries_received_total: _Optional[int] = ..., queries_finished_total: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_step_tokens: _Optional[int] = ..., timestamp: _Optional[float] = ..., step_running_s: _Optional[float] = ..., slowest_step_s: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("text", "tokens", "max_new_tokens", "min_new_tokens", "stop_token_ids", "ignore_eos")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens: TokenList
    max_new_tokens: int
    min_new_tokens: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    ignore_eos: bool
    def __init__(self, text: _Optional[str] = ..., tokens: _Optional[_Union[TokenList, _Mapping]] = ..., max_new_tokens: _Optional[int] = ..., min_new_tokens: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...

class TokenList(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("tokens", "finish_reason", "text")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: FinishReason
    text: str
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., text: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "p50_s", "p90_s", "p99_s", "max_s", "limit_s")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_S_FIELD_NUMBER: _ClassVar[int]
    P90_S_FIELD_NUMBER: _ClassVar[int]
    P99_S_FIELD_NUMBER: _ClassVar[int]
    MAX_S_FIELD_NUMBER: _ClassVar[int]
    LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    limit_s: float
    def __init__(self, count: _Optional[int] = ..., p50_s: _Optional[float] = ..., p90_s: _Optional[float] = ..., p99_s: _Optional[float] = ..., max_s: _Optional[float] = ..., limit_s: _Optional[float] = ...) -> None: ...

class ThroughputPoint(_message.Message):
    __slots__ = ("elapsed_s", "tokens_per_s", "samples_per_s")
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_S_FIELD_NUMBER: _ClassVar[int]
    elapsed_s: float
    tokens_per_s: float
    samples_per_s: float
    def __init__(self, elapsed_s: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., samples_per_s: _Optional[float] = ...) -> None: ...

class AgentRunStatus(_message.Message):
    __slots__ = ("address", "state", "queries_sent", "queries_done", "inflight", "output_tokens", "redispatched", "losses", "last_error", "status")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_SENT_FIELD_NUMBER: _ClassVar[int]
    QUERIES_DONE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REDISPATCHED_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    address: str
    state: str
    queries_sent: int
    queries_done: int
    inflight: int
    output_tokens: int
    redispatched: int
    losses: int
    last_error: str
    status: AgentStatus
    def __init__(self, address: _Optional[str] = ..., state: _Optional[str] = ..., queries_sent: _Optional[int] = ..., queries_done: _Optional[int] = ..., inflight: _Optional[int] = ..., output_tokens: _Optional[int] = ..., redispatched: _Optional[int] = ..., losses: _Optional[int] = ..., last_error: _Optional[str] = ..., status: _Optional[_Union[AgentStatus, _Mapping]] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "scenario", "mode", "phase", "output_dir", "elapsed_s", "expected", "issued", "completed", "failed", "queued", "inflight", "redispatched", "output_tokens", "tokens_per_s", "samples_per_s", "eta_s", "ttft", "tpot", "agents", "throughput", "log_seq", "log_lines", "finished", "outcome", "timestamp")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ISSUED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    REDISPATCHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_FIELD_NUMBER: _ClassVar[int]
    TPOT_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    LOG_LINES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    scenario: str
    mode: str
    phase: str
    output_dir: str
    elapsed_s: float
    expected: int
    issued: int
    completed: int
    failed: int
    queued: int
    inflight: int
    redispatched: int
    output_tokens: int
    tokens_per_s: float
    samples_per_s: float
    eta_s: float
    ttft: LatencySummary
    tpot: LatencySummary
    agents: _containers.RepeatedCompositeFieldContainer[AgentRunStatus]
    throughput: _containers.RepeatedCompositeFieldContainer[ThroughputPoint]
    log_seq: int
    log_lines: _containers.RepeatedScalarFieldContainer[str]
    finished: bool
    outcome: str
    timestamp: float
    def __init__(self, run_id: _Optional[str] = ..., scenario: _Optional[str] = ..., mode: _Optional[str] = ..., phase: _Optional[str] = ..., output_dir: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., expected: _Optional[int] = ..., issued: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., queued: _Optional[int] = ..., inflight: _Optional[int] = ..., redispatched: _Optional[int] = ..., output_tokens: _Optional[int] = ..., tokens_per_s: _Optional[float] = ..., samples_per_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., ttft: _Optional[_Union[LatencySummary, _Mapping]] = ..., tpot: _Optional[_Union[LatencySummary, _Mapping]] = ..., agents: _Optional[_Iterable[_Union[AgentRunStatus, _Mapping]]] = ..., throughput: _Optional[_Iterable[_Union[ThroughputPoint, _Mapping]]] = ..., log_seq: _Optional[int] = ..., log_lines: _Optional[_Iterable[str]] = ..., finished: _Optional[bool] = ..., outcome: _Optional[str] = ..., timestamp: _Optional[float] = ...) -> None: ...
