"""`llmbench submission`: an MLPerf submission tree built from llmbench run folders (their run.json and
LoadGen's logs), the refusals for runs that make none, and MLCommons' own checker run on the result.
"""

__all__ = ["build", "checker", "conf_files", "plan", "run_folder", "system_desc", "texts", "tree", "truncate"]
