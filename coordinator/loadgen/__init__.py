"""MLPerf LoadGen: the benchmark and scenario tables, TestSettings, the SUT/QSL glue and LoadGen's logs.
"""

__all__ = ["benchmarks", "detail_log", "early_stopping", "scenarios", "settings", "summary", "sut", "user_conf"]
