"""Experiment configuration: typed settings (defaults = the paper's Appendix 6.1), loading,
overrides, and what each profile changes from the paper."""

from mmsearch.config._load import (
    REFERENCE,
    Deviation,
    available_experiments,
    build_experiment,
    declared_deviations,
    describe,
    deviations,
    dump_yaml,
    experiment_path,
    flatten,
    load_experiment,
    parse_overrides,
    request_overrides,
    to_dict,
    with_overrides,
)
from mmsearch.config._schema import (
    STAGE_INPUTS,
    STAGE_NAMES,
    DataConfig,
    ExperimentConfig,
    FusionConfig,
    ImageConfig,
    OptimConfig,
    RunConfig,
    StageConfig,
    TextConfig,
    stage_needs_images,
)
from mmsearch.text import PreprocessConfig

__all__ = [
    "REFERENCE", "Deviation", "available_experiments", "build_experiment", "declared_deviations", "describe",
    "deviations", "dump_yaml", "experiment_path", "flatten", "load_experiment", "parse_overrides",
    "request_overrides", "to_dict", "with_overrides", "STAGE_INPUTS", "STAGE_NAMES", "stage_needs_images", "DataConfig", "ExperimentConfig", "FusionConfig",
    "ImageConfig", "OptimConfig", "RunConfig", "StageConfig", "TextConfig", "PreprocessConfig",
]
