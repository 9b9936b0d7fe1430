"""Shared fixtures: one cache folder, one MLflow store and one small demo dataset per session.

The shared read-only caches (torch weights, GloVe 50, NLTK data) stand in for downloads; tests
that need one skip with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CAPTIONS = SHARED / "data" / "comp5329-captions"
COCO_MINI = SHARED / "data" / "coco-mini"
CACHE = SHARED / "cache"

for var, sub in (("TORCH_HOME", "torch"), ("GENSIM_DATA_DIR", "gensim-data"), ("NLTK_DATA", "nltk_data")):
    if (CACHE / sub).exists():
        os.environ.setdefault(var, str(CACHE / sub))
os.environ.setdefault("MMSEARCH_OFFLINE", "1")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def _has(sub: str) -> bool:
    return (Path(os.environ.get({"torch": "TORCH_HOME", "gensim": "GENSIM_DATA_DIR", "nltk": "NLTK_DATA"}[sub], "/nonexistent"))).exists()


needs_glove = pytest.mark.skipif(not (Path(os.environ.get("GENSIM_DATA_DIR", "/x")) / "glove-wiki-gigaword-50").exists(),
                                 reason="glove-wiki-gigaword-50 not in GENSIM_DATA_DIR (../shared/cache absent)")
needs_nltk = pytest.mark.skipif(not _has("nltk"), reason="NLTK data not available (../shared/cache absent)")
needs_mobilenet = pytest.mark.skipif(
    not (Path(os.environ.get("TORCH_HOME", "/x")) / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").exists(),
    reason="mobilenet_v2 ImageNet weights not in TORCH_HOME (../shared/cache absent)")
needs_real_data = pytest.mark.skipif(not REAL_CAPTIONS.exists(), reason="../shared/data absent")


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("session")
    os.environ["MMSEARCH_CACHE_DIR"] = str(root / "cache")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    return root


@pytest.fixture(scope="session")
def demo_dir(session_env: Path) -> Path:
    from mmsearch.data import SynthSpec, synthesize

    return synthesize(session_env / "demo", SynthSpec(n_train=1500, n_test=50, image_size=48, seed=1))


@pytest.fixture(scope="session")
def small(demo_dir: Path) -> dict[str, object]:
    """Overrides of the cpu experiment that keep every stage to seconds."""
    return {"data.path": str(demo_dir), "data.image_size": 48, "image.optim.epochs": 25, "text.optim.epochs": 30,
            "fusion.optim.epochs": 25, "run.threads": 2}
