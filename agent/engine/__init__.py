"""The engines behind the agent: the paged continuous-batching engine (scheduler, block manager,
runner, CUDA graphs, step costs) and the simulated one, with the typed Engine interface and the front
(inbox, registry, sinks, stats) they share.
"""

__all__ = ["block_manager", "cuda_graphs", "factory", "front", "in_process", "openai_engine", "openai_http", "openai_load", "openai_wire", "paged", "runner", "scheduler", "simulated", "slots", "step_cost", "types", "validation", "watch"]
