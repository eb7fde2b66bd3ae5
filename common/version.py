"""The llmbench version, installed or not: the GPU scripts run the source tree without installing it."""
import importlib.metadata
import re
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def version() -> str:
    try:
        return importlib.metadata.version("llmbench")
    except importlib.metadata.PackageNotFoundError:
        pass
    # A source tree: pyproject.toml beside the package folders says it; "+source" marks that it was not installed.
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', _PYPROJECT.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return f"{found.group(1)}+source" if found else "unknown+source"
