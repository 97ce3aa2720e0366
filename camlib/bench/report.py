"""Benchmark results on disk: resumable CSV rows, the merge of per-rank files, and Markdown.

Rows are appended (and flushed) as soon as each image's values exist, so an interrupted run
loses at most the batch in flight. A re-run reads every rows file of the command in the output
folder (the merged CSV and any ``*.rows.rank{r}.csv`` left by a distributed run), skips the rows
whose key is already there, and at the end the main CSV is rewritten from all of them: deduplicated
by key, sorted by key (plain string order, so single-process and distributed runs give the same
file). Floats are written with ``repr`` (shortest round-trip text), so reading a CSV back gives the
float32 values bit for bit.

The Markdown tables are always computed from the CSV, never from memory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
from typing import Iterable, Mapping, Sequence

from camlib.metrics import Summary, summarize


def _fmt(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RowStore:
    """The rows of one command in ``out/``: ``{name}.csv`` plus per-rank part files.

    ``fields``: the CSV columns; ``key``: the columns identifying a row (e.g. image, method).
    In a single-process run rows are appended to ``{name}.csv`` directly; in a distributed run
    rank r appends to ``{name}.rows.rank{r}.csv`` and :meth:`merge` (rank 0, after a barrier)
    folds the part files into ``{name}.csv``.

    ``optional``: columns added after the command's first version (``constant``). A file written
    before them still loads: its rows hold ``""`` there, which the reports show as unknown, never
    as a value; appending to such a file first rewrites it with the current columns.
    """

    def __init__(self, out: str | os.PathLike, name: str, fields: Sequence[str], key: Sequence[str],
                 optional: Sequence[str] = ()):
        self.out = pathlib.Path(out)
        self.name = name
        self.fields = list(fields)
        self.key = list(key)
        self.optional = [f for f in optional if f in self.fields]
        self.path = self.out / f"{name}.csv"
        self._handle = None
        self._part: pathlib.Path | None = None

    # -- reading -----------------------------------------------------------------------------------

    def part_files(self) -> list[pathlib.Path]:
        return sorted(self.out.glob(f"{self.name}.rows.rank*.csv"))

    def key_of(self, row: Mapping) -> tuple:
        return tuple(str(row[k]) for k in self.key)

    def read_file(self, path: pathlib.Path) -> list[dict]:
        """The complete rows of one file (a truncated last line or a row with missing fields is
        ignored: it is recomputed)."""
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None:
            return []
        header = list(reader.fieldnames)
        missing = [f for f in self.fields if f not in header]
        if header != [f for f in self.fields if f in header] or any(f not in self.optional for f in missing):
            raise ValueError(f"{path} has the columns {header}, expected {self.fields}: "
                             f"it was written by another command or version; use another --out")
        rows = [row for row in reader if None not in row.values() and None not in row]
        for row in rows:
            row.update({f: "" for f in missing})  # unknown: the file predates the column
        return rows

    def _upgrade(self, path: pathlib.Path) -> None:
        """Rewrite a file that lacks optional columns with the current columns (before appending)."""
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
        if header is None or header == self.fields:
            return
        rows = self.read_file(path)
        self._write(path, rows)

    def read_all(self) -> list[dict]:
        """All rows (main CSV first, then part files), deduplicated by key, sorted by key."""
        rows: dict[tuple, dict] = {}
        for path in [self.path, *self.part_files()]:
            for row in self.read_file(path):
                rows.setdefault(self.key_of(row), row)
        return [rows[k] for k in sorted(rows)]

    def done(self) -> set[tuple]:
        return {self.key_of(r) for r in self.read_all()}

    # -- writing -----------------------------------------------------------------------------------

    def open(self, rank: int = 0, distributed: bool = False) -> None:
        """Start appending: to the main CSV, or to this rank's part file when distributed."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._part = self.out / f"{self.name}.rows.rank{rank}.csv" if distributed else self.path
        _truncate_partial_line(self._part)
        if self._part.is_file():
            self._upgrade(self._part)
        new = not self._part.is_file() or self._part.stat().st_size == 0
        self._handle = open(self._part, "a", newline="", encoding="utf-8")
        if new:
            csv.writer(self._handle).writerow(self.fields)
            self._flush()

    def append(self, rows: Iterable[Mapping]) -> None:
        writer = csv.writer(self._handle)
        for row in rows:
            writer.writerow([_fmt(row[f]) for f in self.fields])
        self._flush()

    def _flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def merge(self) -> list[dict]:
        """Rewrite ``{name}.csv`` with all rows (sorted, deduplicated); delete the part files."""
        self.close()
        rows = self.read_all()
        self._write(self.path, rows)
        for part in self.part_files():
            part.unlink()
        return rows

    def _write(self, path: pathlib.Path, rows: Sequence[Mapping]) -> None:
        """Replace ``path`` atomically by ``rows`` (values as read: text) under the current columns."""
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.fields)
            for row in rows:
                writer.writerow([row[f] for f in self.fields])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _truncate_partial_line(path: pathlib.Path) -> None:
    """Cut an interrupted, half-written last line so that appending starts on a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


# -- run configuration -----------------------------------------------------------------------------


def check_config(path: pathlib.Path, config: Mapping) -> None:
    """Refuse to resume into a folder whose rows were computed with another configuration."""
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = {k: (old.get(k), config.get(k)) for k in set(old) | set(config) if old.get(k) != config.get(k)}
    if diff:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{path.parent} holds results of another configuration ({details}); "
                         f"use another --out folder to start afresh")


def write_config(path: pathlib.Path, config: Mapping) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- Markdown ----------------------------------------------------------------------------------------


def fmt_summary(s: Summary, digits: int = 2) -> str:
    """``mean [low, high]``."""
    return f"{s.mean:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def floats(rows: Sequence[Mapping], field: str) -> list[float]:
    return [float(r[field]) for r in rows]


def best_indices(values: Sequence[float], higher: bool) -> list[int]:
    """Indices of the best finite value (all of them on a tie); none with fewer than 2 values."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return []
    best = max(finite) if higher else min(finite)
    return [i for i, v in enumerate(values) if not math.isnan(v) and abs(v - best) <= 1e-12 * max(1.0, abs(best))]


def bold_best(cells: list[list[str]], means: Sequence[float], column: int, higher: bool,
              digits: int | None = None) -> None:
    """Bold the best mean(s) of a column; with ``digits``, ties are judged at the shown precision."""
    if digits is not None:
        means = [v if math.isnan(v) else round(v, digits) for v in means]
    for i in best_indices(means, higher):
        cells[i][column] = f"**{cells[i][column]}**"


def summary_or_none(values: Sequence[float], scale: float, method: str = "t") -> Summary | None:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return summarize(values, scale, method=method)


# -- constant maps -----------------------------------------------------------------------------------


def constant_flag(row: Mapping) -> bool | None:
    """A row's ``constant`` column: whether ReLU(Σ α_k A_k) was constant (saliency all zero);
    None when unknown (the row comes from a CSV written before the column existed)."""
    value = str(row.get("constant", "")).strip()
    return None if value == "" else bool(int(float(value)))


def constant_cell(rows: Sequence[Mapping]) -> str:
    """``k/N``: k constant maps among the N rows; ``k/N (u unknown)`` when u rows lack the flag."""
    flags = [constant_flag(r) for r in rows]
    text = f"{sum(1 for f in flags if f)}/{len(flags)}"
    unknown = sum(1 for f in flags if f is None)
    return f"{text} ({unknown} unknown)" if unknown else text


def nonconstant_items(rows: Sequence[Mapping], item: str = "image") -> tuple[set, int, int]:
    """The items (images, questions) on which every method of ``rows`` produced a known
    non-constant map, with the numbers of items left out for a constant map and for an unknown
    flag (or a missing row). Returns ``(items, n_constant, n_unknown)``."""
    methods = {r["method"] for r in rows}
    by_item: dict[str, dict] = {}
    for r in rows:
        by_item.setdefault(r[item], {}).setdefault(r["method"], []).append(constant_flag(r))
    keep, constant, unknown = set(), 0, 0
    for key, flags in by_item.items():
        values = [f for m in methods for f in flags.get(m, [None])]
        if any(values):
            constant += 1
        elif any(f is None for f in values):
            unknown += 1
        else:
            keep.add(key)
    return keep, constant, unknown


def nonconstant_note(n_kept: int, n_items: int, n_constant: int, n_unknown: int, noun: str = "images",
                     who: str = "every method") -> str:
    """One sentence introducing the tables over the non-constant subset."""
    left = [f"{n_constant} with a constant map of some method"]
    if n_unknown:
        left.append(f"{n_unknown} with an unknown flag (a row from a CSV without the column) or a missing row")
    return (f"Over the {n_kept} of {n_items} {noun} on which {who} produced a non-constant map "
            f"(left out: {', '.join(left)}):")
