"""Inference from exported bundles (imports no training code)."""

from mmsearch.serving._predictor import (
    BUNDLE_FILE,
    IMAGE_COLUMN,
    IMAGE_DATA_COLUMN,
    NEEDS_IMAGES,
    SERVE_IMAGE_ROOT_ENV,
    Bundle,
    ImageFiles,
    InputError,
    Predictor,
)

__all__ = ["BUNDLE_FILE", "IMAGE_COLUMN", "IMAGE_DATA_COLUMN", "NEEDS_IMAGES", "SERVE_IMAGE_ROOT_ENV", "Bundle", "ImageFiles", "InputError", "Predictor"]
