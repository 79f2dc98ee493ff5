"""Helpers shared by the benchmarks: the corpus, WER, tables and plots."""

from __future__ import annotations

import csv
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("STTS_CORPUS", ROOT.parent / "shared" / "corpus"))
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Item:
    """One manifest row."""

    path: Path
    duration: float
    reference: str


def corpus(include_raw: bool = False) -> list[Item]:
    """Corpus files with references (headerless .raw skipped unless asked)."""
    with (CORPUS / "manifest.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    items = [Item(CORPUS / r["file"], float(r["duration_s"]), r["reference_text"]) for r in rows]
    return [i for i in items if include_raw or i.path.suffix != ".raw"]


def machine() -> str:
    """One line describing where the numbers come from."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
