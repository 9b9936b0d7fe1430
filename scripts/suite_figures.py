"""Write the README's test-suite figures from a real run's output, never by hand.

    .venv/bin/pytest | tee pytest.log
    python scripts/suite_figures.py --log pytest.log [--quick-start-s 131] [--write README.md]

It reads pytest's closing line (``196 passed, 4 skipped, 19 deselected in 1173.2s``) and puts one
sentence with those figures, the date and the machine's CPU count between the README's
``<!-- suite-figures -->`` markers. Without ``--write`` it prints the sentence. ``.ci/run`` runs it
on its own run and prints the README lines that run would write.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path

START, END = "<!-- suite-figures -->", "<!-- /suite-figures -->"
SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s", re.MULTILINE)


def figures(log: str) -> tuple[dict[str, int], float]:
    """pytest's counts by outcome and its wall time, from the last summary line of ``log``."""
    found = list(SUMMARY.finditer(log))
    if not found:
        raise SystemExit("no pytest summary line (`N passed ... in S s`) in the log")
    last = found[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last["counts"])}
    return counts, float(last["seconds"])


def sentence(counts: dict[str, int], seconds: float, quick_start_s: float | None, cores: int, day: str) -> str:
    parts = [f"{counts.get('passed', 0)} passed"] + [f"{counts[k]} {k}" for k in ("failed", "skipped", "error", "errors")
                                                     if counts.get(k)]
    text = f"On {cores} cores on {day} the default suite (`pytest`) ran in {seconds:.0f} s: {', '.join(parts)}"
    if counts.get("deselected"):
        text += f" ({counts['deselected']} `slow` cases deselected)"
    text += "."
    if quick_start_s is not None:
        text += f" The quick start's first command took {quick_start_s:.0f} s in the same run."
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, required=True, help="pytest's output")
    parser.add_argument("--quick-start-s", type=float, help="seconds the quick start's first command took")
    parser.add_argument("--write", type=Path, help="the README to update between the markers")
    args = parser.parse_args()
    counts, seconds = figures(args.log.read_text(errors="replace"))
    text = sentence(counts, seconds, args.quick_start_s, os.cpu_count() or 1, datetime.date.today().isoformat())
    if args.write is None:
        print(text)
        return 0
    readme = args.write.read_text()
    if START not in readme or END not in readme:
        print(f"{args.write}: no {START} ... {END} block to write", file=sys.stderr)
        return 2
    head, rest = readme.split(START, 1)
    args.write.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
