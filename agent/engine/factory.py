from llmbench.agent.engine.types import Engine, EngineConfig


def create_engine(cfg: EngineConfig) -> Engine:
    if cfg.engine == "simulated":
        from llmbench.agent.engine.simulated import SimulatedEngine
        return SimulatedEngine(cfg)
    if cfg.engine == "paged":
        from llmbench.agent.engine.paged import PagedEngine
        return PagedEngine(cfg)
    if cfg.engine == "openai":
        from llmbench.agent.engine.openai_engine import EndpointEngine
        return EndpointEngine(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}: use 'paged', 'simulated' or 'openai'")
