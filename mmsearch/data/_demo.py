"""The demo dataset every command falls back to when ``--data`` is not given."""

from __future__ import annotations

import logging
from pathlib import Path

from mmsearch._diskcache import file_lock, stable_hash
from mmsearch._paths import cache_dir
from mmsearch.data._synth import SynthSpec, synthesize

log = logging.getLogger("mmsearch.data")

DEMO_SPEC = SynthSpec(n_train=2000, n_test=500, image_size=64, seed=0)


def demo_dataset(spec: SynthSpec = DEMO_SPEC) -> Path:
    """Generate the demo dataset once into the cache folder and reuse it afterwards."""
    folder = cache_dir("demo") / f"demo-{stable_hash(spec.__dict__ | {'v': 1}, 10)}"
    done = folder / ".complete"
    if done.exists():
        return folder
    with file_lock(folder.with_suffix(".lock")):
        if not done.exists():
            log.info("generating the demo dataset into %s", folder)
            synthesize(folder, spec)
            done.touch()
    return folder
