"""The helper scripts users and CI run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_suite_figures_come_from_the_log_and_land_between_the_markers(tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text("tests/test_a.py ....\n"
                   "===== 1 failed, 190 passed, 4 skipped, 21 deselected, 3 warnings in 1012.47s (0:16:52) =====\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- suite-figures -->\nold figures\n<!-- /suite-figures -->\nrest\n")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "suite_figures.py"), "--log", str(log), "--quick-start-s", "98",
                           "--write", str(readme)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- suite-figures -->\n") and text.endswith("<!-- /suite-figures -->\nrest\n")
    assert "old figures" not in text and "ran in 1012 s: 190 passed, 1 failed, 4 skipped (21 `slow` cases" in text
    assert "first command took 98 s" in text
    log.write_text("no summary here\n")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "suite_figures.py"), "--log", str(log)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "no pytest summary line" in proc.stderr
