"""Experiment configuration: typed dataclasses (defaults = the paper's Appendix 6.1), loading, validation."""

from mmsearch.config._load import (
    available_experiments, build_experiment, dump_yaml, experiment_path, flatten, load_experiment,
    parse_overrides, to_dict, with_overrides,
)
from mmsearch.config._schema import (
    DataConfig, ExperimentConfig, FusionConfig, ImageConfig, OptimConfig, RunConfig, TextConfig,
)
from mmsearch.text._preprocess import PreprocessConfig

__all__ = [
    "available_experiments", "build_experiment", "dump_yaml", "experiment_path", "flatten", "load_experiment",
    "parse_overrides", "to_dict", "with_overrides", "DataConfig", "ExperimentConfig", "FusionConfig",
    "ImageConfig", "OptimConfig", "RunConfig", "TextConfig", "PreprocessConfig",
]
