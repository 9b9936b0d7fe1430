"""Shared fixtures: one cache folder, one MLflow store and one small demo dataset per session.

The shared read-only caches (torch weights, GloVe 50, NLTK data) stand in for downloads; tests
that need one skip with the reason when it is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsearch._paths import absolutize_environment

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CAPTIONS = SHARED / "data" / "comp5329-captions"
COCO_MINI = SHARED / "data" / "coco-mini"
CACHE = SHARED / "cache"

for var, sub in (("TORCH_HOME", "torch"), ("GENSIM_DATA_DIR", "gensim-data"), ("NLTK_DATA", "nltk_data")):
    if (CACHE / sub).exists():
        os.environ.setdefault(var, str(CACHE / sub))
os.environ.setdefault("MMSEARCH_OFFLINE", "1")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
absolutize_environment()  # a relative value a user exported (as the README shows) means it from here, everywhere


def _has(sub: str) -> bool:
    return (Path(os.environ.get({"torch": "TORCH_HOME", "gensim": "GENSIM_DATA_DIR", "nltk": "NLTK_DATA"}[sub], "/nonexistent"))).exists()


needs_glove = pytest.mark.skipif(not (Path(os.environ.get("GENSIM_DATA_DIR", "/x")) / "glove-wiki-gigaword-50").exists(),
                                 reason="glove-wiki-gigaword-50 not in GENSIM_DATA_DIR (../shared/cache absent)")
needs_nltk = pytest.mark.skipif(not _has("nltk"), reason="NLTK data not available (../shared/cache absent)")
needs_mobilenet = pytest.mark.skipif(
    not (Path(os.environ.get("TORCH_HOME", "/x")) / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").exists(),
    reason="mobilenet_v2 ImageNet weights not in TORCH_HOME (../shared/cache absent)")
needs_real_data = pytest.mark.skipif(not REAL_CAPTIONS.exists(), reason="../shared/data absent")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# End-to-end cases that need a CUDA GPU: in the default run wherever one exists, skipped (with
# this line) elsewhere.
gpu = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="no CUDA GPU on this machine")]


PROJECT = Path(__file__).resolve().parents[1]
# What running the suite may leave in the project folder: the environment it runs in and
# Python's bytecode caches. Anything else (./mlruns, a journal, exports/) is a test writing
# outside its tmp folder.
ALLOWED_IN_TREE = (".venv/", "__pycache__/", ".egg-info/")


def _tree() -> set[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=PROJECT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line for line in out.splitlines() if not any(part in line for part in ALLOWED_IN_TREE)}


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = _tree()
    root = tmp_path_factory.mktemp("session")
    os.environ["MMSEARCH_CACHE_DIR"] = str(root / "cache")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    yield root
    after = _tree()
    if before is not None and after is not None and after != before:
        pytest.fail("the test run changed the project folder (tests write only under their tmp folders): "
                    + ", ".join(sorted(after - before)[:20]), pytrace=False)


@pytest.fixture(scope="session")
def demo_dir(session_env: Path) -> Path:
    from mmsearch.data import SynthSpec, synthesize

    return synthesize(session_env / "demo", SynthSpec(n_train=1500, n_test=50, image_size=48, seed=1))


@pytest.fixture(scope="session")
def small(demo_dir: Path) -> dict[str, object]:
    """Overrides of the cpu experiment that keep every stage to seconds. Pinned to the cpu, so the
    default suite asserts the same bit-reproducible outcomes on a machine with a GPU; the ``gpu``
    cases (test_gpu.py) are where CUDA runs."""
    return {"data.path": str(demo_dir), "data.image_size": 48, "image.optim.epochs": 25, "text.optim.epochs": 30,
            "fusion.optim.epochs": 25, "run.threads": 2, "run.device": "cpu"}


@pytest.fixture(scope="session")
def speed(small: dict[str, object]) -> dict[str, object]:
    """``small`` without the dataset: the ``--set`` values that go beside ``--data``."""
    return {k: v for k, v in small.items() if k != "data.path"}


# A session fixture's setup is timed with the first test that asks for it (pytest-timeout): the
# tests that use one get its budget on top of their own, so a busy machine slows them, never fails
# them; and the fixture says which step it is in, which a timeout's report shows.
SESSION_FIXTURE_BUDGET_S = {"exported": 1200}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        extra = sum(s for name, s in SESSION_FIXTURE_BUDGET_S.items() if name in getattr(item, "fixturenames", ()))
        if extra:
            own = item.get_closest_marker("timeout")
            base = own.args[0] if own and own.args else item.config.getini("timeout") or 600
            item.add_marker(pytest.mark.timeout(float(base) + extra))


def _step(fixture: str, what: str) -> None:
    print(f"[{fixture} fixture] {what}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, small: dict, speed: dict) -> dict:
    """A finished fusion-dropout-count sweep on the demo data and its exported champion model
    ``demo-model`` (an image + caption pipeline), shared by the export and bad-input tests."""
    from mmsearch.export import ExportRequest, export_model
    from mmsearch.search import SweepRequest, run_sweep

    root = tmp_path_factory.mktemp("export")
    storage = str(root / "journal.log")
    _step("exported", "sweep fusion-dropout-count (upstream image and text stages first, then 6 cells)")
    run_sweep(SweepRequest(sweep="fusion-dropout-count", experiment="cpu", overrides=dict(speed),
                           data=small["data.path"], storage=storage, trials=6, progress=False))
    _step("exported", "export demo-model (the whole pipeline trained again)")
    result = export_model(ExportRequest(sweeps=["fusion-dropout-count"], name="demo-model", experiment="cpu",
                                        data=small["data.path"], overrides=dict(speed), storage=storage,
                                        out_dir=root / "exports"))
    return {"root": root, "storage": storage, "result": result}
