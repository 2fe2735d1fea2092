"""tokis: off-policy importance-sampling estimators for LLM RL, measured against exact truth."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokis")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = ["__version__", "envs", "estimators", "exact", "analysis"]


def __getattr__(name):
    import importlib

    if name in ("envs", "estimators", "exact", "analysis"):
        return importlib.import_module(f"tokis.{name}")
    raise AttributeError(name)
