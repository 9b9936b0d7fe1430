"""Write the README's test-suite figures and the quick start's table from a real run's output,
never by hand.

    .venv/bin/mmsearch sweep run fusion-dropout-count --experiment cpu 2>&1 | tee quick-start.log
    .venv/bin/pytest | tee pytest.log
    python scripts/suite_figures.py --log pytest.log [--quick-start-s 131] [--quick-start-log quick-start.log]
                                    [--busy 2] [--write README.md]

It reads pytest's closing line (``196 passed, 4 skipped, 19 deselected in 1173.2s``) and puts one
sentence with those figures, the date and the machine's CPU count between the README's
``<!-- suite-figures -->`` markers; with ``--quick-start-log``, the level table that run ended with
between the ``<!-- quick-start-table -->`` markers. Without ``--write`` it prints them. ``.ci/run``
runs it on its own run and prints the README lines that run would write.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path

START, END = "<!-- suite-figures -->", "<!-- /suite-figures -->"
TABLE_START, TABLE_END = "<!-- quick-start-table -->", "<!-- /quick-start-table -->"
SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s", re.MULTILINE)


def figures(log: str) -> tuple[dict[str, int], float]:
    """pytest's counts by outcome and its wall time, from the last summary line of ``log``."""
    found = list(SUMMARY.finditer(log))
    if not found:
        raise SystemExit("no pytest summary line (`N passed ... in S s`) in the log")
    last = found[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last["counts"])}
    return counts, float(last["seconds"])


def sentence(counts: dict[str, int], seconds: float, quick_start_s: float | None, cores: int, day: str,
             busy: int = 0) -> str:
    parts = [f"{counts.get('passed', 0)} passed"] + [f"{counts[k]} {k}" for k in ("failed", "skipped", "error", "errors")
                                                     if counts.get(k)]
    beside = f", beside {busy} busy loop(s) (a CPU-bound process per core, as CI runs it)," if busy else ""
    text = f"On {cores} cores on {day} the default suite (`pytest`){beside} ran in {seconds:.0f} s: {', '.join(parts)}"
    if counts.get("deselected"):
        text += f" ({counts['deselected']} `slow` cases deselected)"
    text += "."
    if quick_start_s is not None:
        text += f" The quick start's first command took {quick_start_s:.0f} s in the same run."
    return text


def quick_start_table(log: str) -> str:
    """The level table a `sweep run` printed (its header line to the level rows' end)."""
    lines = log.splitlines()
    head = next((i for i, line in enumerate(lines) if line.lstrip().startswith("fusion.dropout_count") and " n " in line),
                None)
    if head is None:
        raise SystemExit("no level table (a line starting with `fusion.dropout_count   n`) in the quick start's log")
    rows = [lines[head]]
    for line in lines[head + 1:]:
        if not (line.startswith("★ ") or line.startswith("  ")) or line.lstrip().startswith("★ best"):
            break
        rows.append(line.rstrip())
    return "```text\n" + "\n".join(rows) + "\n```"


def _between(text: str, start: str, end: str, content: str, where: Path) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{where}: no {start} ... {end} block to write")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{content}\n{end}{rest.split(end, 1)[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, required=True, help="pytest's output")
    parser.add_argument("--quick-start-s", type=float, help="seconds the quick start's first command took")
    parser.add_argument("--quick-start-log", type=Path, help="the quick start's output (its level table)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes that ran beside the suite")
    parser.add_argument("--write", type=Path, help="the README to update between the markers")
    args = parser.parse_args()
    counts, seconds = figures(args.log.read_text(errors="replace"))
    text = sentence(counts, seconds, args.quick_start_s, os.cpu_count() or 1, datetime.date.today().isoformat(),
                    args.busy)
    table = quick_start_table(args.quick_start_log.read_text(errors="replace")) if args.quick_start_log else None
    if args.write is None:
        print(text if table is None else f"{text}\n{table}")
        return 0
    readme = args.write.read_text()
    try:
        readme = _between(readme, START, END, text, args.write)
        if table is not None:
            readme = _between(readme, TABLE_START, TABLE_END, table, args.write)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    args.write.write_text(readme)
    print(text if table is None else f"{text}\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
