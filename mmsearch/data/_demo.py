"""The demo dataset every command falls back to when ``--data`` is not given."""

from __future__ import annotations

from pathlib import Path

from mmsearch._cache import cached, entry, stable_hash
from mmsearch.data._synth import SynthSpec, synthesize

DEMO_SPEC = SynthSpec(n_train=2000, n_test=500, image_size=64, seed=0)


def demo_dataset(spec: SynthSpec = DEMO_SPEC) -> Path:
    """Generate the demo dataset once into the cache folder and reuse it afterwards."""
    return cached(entry("demo", f"demo-{stable_hash(spec.__dict__ | {'v': 1}, 10)}"), lambda tmp: synthesize(tmp, spec),
                  kind="demo", what="the demo dataset")
