"""mmsearch: hyperparameter sweeps and ablations for multimodal multi-label classifiers."""

from importlib.metadata import version as _version

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

__version__ = _version("mmsearch")  # one version: pyproject.toml's, as installed
__all__ = ["AssetMissingError", "ConfigError", "DataError", "MmsearchError", "Problem", "ValidationError", "__version__"]
