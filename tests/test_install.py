"""A wheel (``pip install .``, not ``-e``) works on its own: its sweeps, profiles and findings are
in it (package data), found in a venv and under ``pip install --target``; a user's own ``sweeps/``
folder adds to them, and a sweep runs from any folder."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from _sweepproc import sets
from conftest import PROJECT, needs_glove, needs_mobilenet, needs_nltk


@pytest.mark.slow  # builds a wheel and a venv: about 2 minutes on 2 cores
@needs_glove
@needs_mobilenet
@needs_nltk
def test_a_wheel_in_a_fresh_venv_lists_shows_and_runs_the_bundled_sweeps(tmp_path: Path, small: dict,
                                                                          speed: dict) -> None:
    wheels = tmp_path / "wheels"
    # From a copy of the tracked files: building in the checkout would leave build/ behind.
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (PROJECT / name).is_symlink():  # mmsearch/_shipped/: links to the shipped folders, as git keeps them
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).symlink_to(os.readlink(PROJECT / name))
        elif (PROJECT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((PROJECT / name).read_bytes())
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = wheels.glob("mmsearch-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    target = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                            text=True, check=True).stdout.strip()
    # The venv's own pip: this environment's pip with --prefix would uninstall this environment's mmsearch.
    installed = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Then the dependencies, from this environment (nothing to download); mmsearch only from the wheel.
    # After the install: pip seeing this environment's mmsearch there would uninstall it.
    Path(target, "deps.pth").write_text("\n".join(p for p in site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    (work / "sweeps").mkdir(parents=True)
    (work / "sweeps" / "my-own.yaml").write_text(
        "name: my-own\ndescription: a user's sweep\npaper: none\nstage: fusion\nmode: ablation\n"
        "factor: fusion.dropout_p\nlevels: [0.1, 0.3]\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"

    def mmsearch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # `python -m` of the venv, as its console script would run.
        return subprocess.run([str(py), "-m", "mmsearch", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)

    where = subprocess.run([py, "-c", "import mmsearch; print(mmsearch.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout
    shipped = sorted(p.stem for p in (PROJECT / "sweeps").glob("*.yaml"))
    listed = mmsearch("sweep", "list")
    assert listed.returncode == 0, listed.stderr
    assert _listed(listed.stdout) == set(shipped) | {"my-own"}, listed.stdout

    # `pip install --target DIR`: no prefix of its own (a share/ folder would be lost), same sweeps.
    target_dir = tmp_path / "target"
    into = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target_dir),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert into.returncode == 0, into.stderr[-3000:]
    target_env = {**env, "PYTHONPATH": os.pathsep.join([str(target_dir), *site.getsitepackages()])}
    bare = tmp_path / "bare"
    bare.mkdir()
    from_target = subprocess.run([sys.executable, "-c", "import mmsearch, sys; print(mmsearch.__file__)\n"
                                  "from mmsearch.cli import main; sys.exit(main(['sweep', 'list']))"], cwd=bare,
                                 env=target_env, capture_output=True, text=True, timeout=120)
    assert from_target.returncode == 0, from_target.stderr[-3000:]
    first, _, rest = from_target.stdout.partition("\n")
    assert first.startswith(str(target_dir)), first  # the --target copy, not the checkout
    assert _listed(rest) == set(shipped) and len(shipped) >= 17, from_target.stdout
    shown = mmsearch("sweep", "show", "fusion-dropout-count", "--experiment", "cpu")
    assert shown.returncode == 0 and "dropout" in shown.stdout, shown.stderr
    ran = mmsearch("sweep", "run", "my-own", "--experiment", "cpu", "--data", small["data.path"], *sets(speed),
                   timeout=400)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "2/2 cells complete" in ran.stdout, ran.stdout
    report = mmsearch("report", "--experiment", "cpu", "--data", small["data.path"], timeout=300)
    assert report.returncode == 0 and (work / "reports" / "reproduction.html").exists(), report.stderr[-3000:]


def _listed(out: str) -> set[str]:
    """The sweep names a ``sweep list`` prints (the first word of its rows)."""
    rows = [line for line in out.splitlines() if line.strip()]
    assert rows and rows[0].split()[0] == "name", out  # the header
    return {line.split()[0] for line in rows[1:]}


def test_the_shipped_folders_are_found_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    from mmsearch.config import available_experiments
    from mmsearch.search import available_sweeps

    monkeypatch.chdir(tmp_path)
    assert {"cpu", "paper"} <= set(available_experiments())
    assert len(available_sweeps()) >= 17
