"""The `llmbench` dispatcher: version, and argument errors in the chosen subcommand's own words."""
from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from llmbench.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmbench {importlib.metadata.version('llmbench')}"


def test_version_from_a_source_tree_that_is_not_installed(tmp_path):
    """The GPU scripts link the package folders into a site folder without installing llmbench (-S keeps
    the installed metadata out of sight): --version must still answer, from pyproject.toml."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "llmbench").mkdir()
    for folder in ("cli", "common"):
        (tmp_path / "llmbench" / folder).symlink_to(root / folder)
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from llmbench.cli.main import main; main(['--version'])"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)  # not the checkout: its llmbench.egg-info is metadata too
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"llmbench {importlib.metadata.version('llmbench')}+source"


@pytest.mark.parametrize("argv, prog", [
    (["run", "--bogus"], "llmbench run"),
    (["coordinator", "--agents", "127.0.0.1:1", "--bogus", "x"], "llmbench coordinator"),
    (["compliance", "test06", "--log-dir", ".", "--bogus"], "llmbench compliance"),
])
def test_an_unknown_flag_is_one_line_in_the_subcommands_name(argv, prog, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err  # not 20 lines of usage
    assert err.startswith(f"{prog}: error: unrecognized arguments: --bogus") and f"(see {prog} --help)" in err, err


def test_a_missing_flag_or_value_is_one_line_too(capsys):
    for argv, message in ((["coordinator"], "the following arguments are required: --agents"),
                          (["run", "--agents", "many"], "argument --agents: invalid int value: 'many'")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err == f"llmbench {argv[0]}: error: {message} (see llmbench {argv[0]} --help)\n"


def test_an_unknown_command_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as done:
        main(["nope"])
    assert done.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("alias", ["agent_main", "coordinator_main"])
def test_the_aliases_answer_version(alias, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [alias, "--version"])
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module("llmbench.cli.main"), alias)()
    assert done.value.code == 0 and capsys.readouterr().out.startswith("llmbench ")
