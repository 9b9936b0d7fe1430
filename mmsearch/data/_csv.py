"""Reader and writer for the COMP5329 CSV files.

Two variants circulate and both must read losslessly:

* the quoted one (the file as shipped to us): CRLF line ends, captions with commas or quotes are
  CSV-quoted with doubled quotes inside, and a few quoted captions contain a bare CR;
* the competition's original one: captions unquoted, raw commas and quotes included, so
  everything after the last fixed column's comma is the caption.

Python's ``csv`` module reads only the first and pandas mangles the second, so the rows are
split by hand: fixed columns up to their commas, then the caption either as one quoted field
(when it is exactly that) or as the raw remainder of the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.data._labels import LABEL_INDEX, LABELS
from mmsearch.errors import Problem


@dataclass
class CsvTable:
    """Rows of one CSV file; ``lines`` are 1-based physical line numbers (header = line 1)."""

    path: Path
    columns: list[str]
    image_ids: list[str] = field(default_factory=list)
    labels: list[list[int]] | None = None
    captions: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)


def _split_records(text: str) -> list[tuple[int, str]]:
    """Physical lines split on LF (a bare CR stays inside its line), with their numbers."""
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.endswith("\r"):
            raw = raw[:-1]
        out.append((number, raw))
    while out and out[-1][1] == "":
        out.pop()
    return out


def _parse_quoted(rest: str) -> tuple[str, str] | None:
    """If ``rest`` starts with one CSV-quoted field, return (value, what follows)."""
    if not rest.startswith('"'):
        return None
    value = []
    i = 1
    while i < len(rest):
        ch = rest[i]
        if ch == '"':
            if i + 1 < len(rest) and rest[i + 1] == '"':
                value.append('"')
                i += 2
                continue
            return "".join(value), rest[i + 1 :]
        value.append(ch)
        i += 1
    return None  # unterminated within this chunk


MAX_CSV_BYTES = 256 * 2**20


def read_table(path: Path, required: Sequence[str]) -> tuple[CsvTable, list[Problem]]:
    """Read a COMP5329 CSV. Returns the rows that parsed and every problem found."""
    problems: list[Problem] = []
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:  # read whole and split, a file costs several times its size in memory
        return CsvTable(path, []), [Problem(str(path), f"{size:,} bytes; a CSV here is at most {MAX_CSV_BYTES:,} "
                                                       "(COMP5329's 40,000 rows are about 4 MB)")]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        return CsvTable(path, []), [Problem(f"{path}:{line}", f"not UTF-8 text: byte(s) {bad} at column {column} "
                                            f"(byte offset {exc.start}); save the file as UTF-8")]
    records = _split_records(text)
    if not records:
        return CsvTable(path, []), [Problem(f"{path}:1", "empty file: expected a header row")]
    header_line, header = records[0]
    columns = [c.strip() for c in header.split(",")]
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(
            Problem(
                f"{path}:{header_line}",
                f"missing column(s) {', '.join(missing)} in header {header!r}; "
                f"expected columns {', '.join(required)} (Caption last)",
            )
        )
        return CsvTable(path, columns), problems
    has_caption = "Caption" in columns
    if has_caption and columns[-1] != "Caption":
        problems.append(
            Problem(f"{path}:{header_line}", f"Caption must be the last column, header is {header!r}")
        )
        return CsvTable(path, columns), problems
    # A submission (ImageID,Labels) has no free-text column: every column is split on commas.
    fixed = columns[:-1]
    table = CsvTable(path, columns, labels=[] if "Labels" in columns else None)
    i = 1
    while i < len(records):
        number, line = records[i]
        i += 1
        if line == "":
            continue
        parts = line.split(",", len(fixed))
        if len(parts) <= len(fixed):
            problems.append(
                Problem(f"{path}:{number}", f"expected {len(columns)} fields, found {len(parts)}: {line!r}")
            )
            continue
        values = dict(zip(fixed, parts[: len(fixed)]))
        rest = parts[len(fixed)]
        caption = rest
        quoted = _parse_quoted(rest)
        # A quoted caption may run over physical lines (CR/LF inside quotes): join until closed.
        joined_end = i
        buffer = rest
        while (
            quoted is None
            and buffer.startswith('"')
            and joined_end < min(len(records), i + _MAX_JOINED_LINES)
            and _open_quote(buffer)
        ):
            buffer = buffer + "\n" + records[joined_end][1]
            joined_end += 1
            quoted = _parse_quoted(buffer)
        if quoted is not None and quoted[1] == "":
            caption = quoted[0]
            i = max(i, joined_end)
        if not has_caption:
            values[columns[-1]], caption = caption, ""
        elif len(caption) > MAX_CAPTION_CHARS:
            # NLTK's tokenizer regexes backtrack for minutes on megabytes of text: refuse here.
            problems.append(Problem(f"{path}:{number}", f"Caption: {len(caption):,} characters; a caption is at most "
                                                        f"{MAX_CAPTION_CHARS:,} (one image's description)"))
            continue
        table.image_ids.append(values["ImageID"].strip())
        table.captions.append(caption)
        table.lines.append(number)
        if table.labels is not None:
            table.labels.append(_parse_labels(values["Labels"], f"{path}:{number}", problems))
    return table, problems


_MAX_JOINED_LINES = 4  # a quoted caption spanning more lines is a malformed row
MAX_CAPTION_CHARS = 10_000  # the longest real COMP5329 caption is a few hundred


def _open_quote(buffer: str) -> bool:
    """True while a field opened with a quote has an odd number of quotes (still open)."""
    return buffer.count('"') % 2 == 1


def _parse_labels(value: str, where: str, problems: list[Problem]) -> list[int]:
    """The row's labels. Problems are summarised per kind (at most three per field, each with a
    few examples and a count), so a field of millions of tokens costs one pass and a few lines."""
    tokens = value.split()
    if not tokens:
        problems.append(Problem(where, f"Labels: empty label list {_short(value)}; each row needs at least one label"))
        return []
    seen: set[int] = set()
    twice: set[str] = set()
    bad: dict[str, list[str]] = {"not an integer": [], "unknown": [], "listed twice": []}
    counts = dict.fromkeys(bad, 0)
    for token in tokens:
        if not (token.isascii() and token.isdigit()):  # int() would take "+3", " 3", "٣" and "1_0"
            kind = "not an integer"
        elif int(token) not in LABEL_INDEX:
            kind = "unknown"
        elif int(token) in seen:
            if token in twice:
                continue  # a label listed many times is one problem
            twice.add(token)
            kind = "listed twice"
        else:
            seen.add(int(token))
            continue
        counts[kind] += 1
        example = _short(token) if kind == "not an integer" else token
        if len(bad[kind]) < 3 and example not in bad[kind]:
            bad[kind].append(example)
    valid = f"valid labels are {_valid_labels()}"
    for kind, examples in bad.items():
        if not counts[kind]:
            continue
        listed = ", ".join(examples) + (f" and {counts[kind] - len(examples):,} more" if counts[kind] > len(examples)
                                        else "")
        many = counts[kind] > 1
        problems.append(Problem(where, {
            "not an integer": f"Labels: {listed} {'are not integers' if many else 'is not an integer'}; {valid}",
            "unknown": f"Labels: unknown label{'s' if many else ''} {listed}; {valid}",
            "listed twice": f"Labels: label{'s' if many else ''} {listed} listed twice in {_short(value)}; "
                            "list each label once",
        }[kind]))
    return sorted(seen, key=LABEL_INDEX.__getitem__)


def _short(text: str, limit: int = 60) -> str:
    """A field as an error message quotes it: whole when short, else its start and its length."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def _valid_labels() -> str:
    return "1..19 without 12"


def format_labels(labels: Sequence[int]) -> str:
    return " ".join(str(label) for label in labels)


def write_submission(path: Path, image_ids: Sequence[str], labels: Sequence[Sequence[int]]) -> None:
    """Kaggle submission format: ``ImageID,Labels`` with space-separated labels."""
    if len(image_ids) != len(labels):
        raise ValueError(f"{len(image_ids)} image ids but {len(labels)} label lists")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ImageID", "Labels"])
    for image_id, row in zip(image_ids, labels):
        writer.writerow([image_id, format_labels(row)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_table(
    path: Path,
    image_ids: Sequence[str],
    captions: Sequence[str],
    labels: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write a train.csv (with labels) or test.csv the way the shipped file is: quoted, CRLF."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["ImageID", "Labels", "Caption"] if labels is not None else ["ImageID", "Caption"])
    for r, (image_id, caption) in enumerate(zip(image_ids, captions)):
        if labels is not None:
            writer.writerow([image_id, format_labels(labels[r]), caption])
        else:
            writer.writerow([image_id, caption])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


__all__ = ["CsvTable", "read_table", "write_submission", "write_table", "format_labels", "LABELS"]
