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


def test_the_quick_start_table_comes_from_the_run_it_printed(tmp_path: Path) -> None:
    log, quick = tmp_path / "pytest.log", tmp_path / "quick-start.log"
    log.write_text("===== 190 passed in 100.0s =====\n")
    quick.write_text("12:00:01 [fusion-dropout-count] 9/9 cells complete\nstudy s: 9/9 cells complete\n"
                     "  fusion.dropout_count   n  mean ± std        95% CI   vs base   failed\n"
                     "  0                      3  0.7728 ± 0.0015   0.76..0.77    inconclusive (-0.0185..+0.0219)  0\n"
                     "★ 1                      3  0.7710 ± 0.0057   0.75..0.78    base   0\n"
                     "  ★ best mean val_f1 (maximize). Verdicts: ...\ndata: the generated demo dataset in /x\n")
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- suite-figures -->\nx\n<!-- /suite-figures -->\nb\n<!-- quick-start-table -->\nold\n"
                      "<!-- /quick-start-table -->\nc\n")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "suite_figures.py"), "--log", str(log), "--quick-start-log",
                           str(quick), "--write", str(readme)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    table = text.split("<!-- quick-start-table -->\n", 1)[1].split("<!-- /quick-start-table -->", 1)[0]
    assert table.startswith("```text\n  fusion.dropout_count   n") and table.endswith("base   0\n```\n"), table
    assert "best mean" not in table and "old" not in table and text.endswith("<!-- /quick-start-table -->\nc\n")
