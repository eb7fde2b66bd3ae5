from llmbench.agent.types import Engine, EngineConfig


def create_engine(cfg: EngineConfig) -> Engine:
    if cfg.engine == "simulated":
        from llmbench.agent.simulated import SimulatedEngine
        return SimulatedEngine(cfg)
    if cfg.engine == "paged":
        from llmbench.agent.engine import PagedEngine
        return PagedEngine(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}: use 'paged' or 'simulated'")
