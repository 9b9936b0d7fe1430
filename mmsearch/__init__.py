"""mmsearch: hyperparameter sweeps and ablations for multimodal multi-label classifiers."""

from mmsearch.errors import AssetMissingError, ConfigError, DataError, MmsearchError, Problem, ValidationError

__version__ = "0.2.0"
__all__ = ["AssetMissingError", "ConfigError", "DataError", "MmsearchError", "Problem", "ValidationError", "__version__"]
