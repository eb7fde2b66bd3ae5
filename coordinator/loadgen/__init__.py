"""MLPerf LoadGen: the scenario table, TestSettings, the SUT/QSL glue and LoadGen's logs.
"""

__all__ = ["detail_log", "scenarios", "settings", "summary", "sut"]
