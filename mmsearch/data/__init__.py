"""COMP5329 data layout: reading, validating, splitting, images, augmentation, demo data."""

from mmsearch.data._augment import (
    AUGMENTATION_SETS,
    TRANSFORMS,
    ImageTransform,
    build_transform,
    is_deterministic,
)
from mmsearch.data._batches import ImageBatches, image_input
from mmsearch.data._csv import MAX_CAPTION_CHARS, CsvTable, read_table, write_submission, write_table
from mmsearch.data._dataset import Dataset, Split
from mmsearch.data._demo import DEMO_SPEC, demo_dataset
from mmsearch.data._images import (
    ImageCache,
    check_images,
    check_room_for,
    decode_image,
    image_cache,
    load_images,
    undecodable,
)
from mmsearch.data._labels import (
    LABEL_INDEX,
    LABEL_NAMES,
    LABELS,
    NUM_LABELS,
    binarize,
    decode,
    encode,
)
from mmsearch.data._synth import SynthSpec, holdout, synthesize

__all__ = [
    "LABEL_INDEX",
    "AUGMENTATION_SETS", "TRANSFORMS", "ImageBatches", "ImageTransform", "build_transform", "image_input", "is_deterministic", "CsvTable", "MAX_CAPTION_CHARS", "read_table",
    "write_submission", "write_table", "Dataset", "Split", "DEMO_SPEC", "demo_dataset", "check_images",
    "decode_image", "load_images", "ImageCache", "image_cache", "check_room_for", "undecodable", "LABEL_NAMES", "LABELS", "NUM_LABELS", "binarize", "decode",
    "encode", "SynthSpec", "holdout", "synthesize",
]
