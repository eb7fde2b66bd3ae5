"""Type-check the engine and mesh cores with mypy: python scripts/typecheck.py (part of README's test command).

The source folders map onto `llmbench.*` through pyproject's package-dir, which mypy cannot follow (the
editable install resolves it with an import hook), so the check runs over a temporary `llmbench/` tree of
links to those folders.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = config["tool"]["setuptools"]["package-dir"]
    checked = config["tool"]["llmbench"]["typecheck"]
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp, "llmbench")
        top.mkdir()
        (top / "__init__.py").touch()
        for package, folder in package_dir.items():
            (top / package.removeprefix("llmbench.")).symlink_to(ROOT / folder)
        args = [arg for package in checked for arg in ("-p", package)]
        return subprocess.call([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *args],
                               cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
