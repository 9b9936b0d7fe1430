"""mmsearch: hyperparameter sweeps and ablations for multimodal multi-label classifiers."""

from mmsearch._paths import absolutize_environment
from mmsearch.errors import (
    AssetMissingError,
    ConfigError,
    DataError,
    MmsearchError,
    Problem,
    ValidationError,
)

# Relative cache folders (TORCH_HOME=../shared/cache/torch) must mean the same folder in every
# process this one starts, wherever that runs: resolve them once, here.
absolutize_environment()


def __getattr__(name: str) -> str:
    # Read when asked, not at import: importlib.metadata is a third of the command line's start,
    # during which a Ctrl-C cannot yet be answered with one line.
    if name == "__version__":
        from importlib.metadata import version

        return version("mmsearch")  # one version: pyproject.toml's, as installed
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")


__all__ = ["AssetMissingError", "ConfigError", "DataError", "MmsearchError", "Problem", "ValidationError", "__version__"]
