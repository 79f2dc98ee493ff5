"""A result file in bench/results/ as the README's renderers read it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MACHINE = re.compile(r"[\w-]+, \d+ cores, Python \d+(?:\.\d+)*")
MD_LOAD = re.compile(
    r"[Ll]oad average(?: of the \(shared\) machine:)? "
    r"(?P<load>[\d.]+ at the start, [\d.]+ at the end|[\d.]+-[\d.]+)"
)


class BlockError(Exception):
    """A marker that names no renderer, a missing result file, an unclosed block."""


@dataclass
class Source:
    """One result file: its JSON and, where the bench wrote one, its Markdown beside it."""

    name: str
    data: Any
    md: str | None = field(default=None, repr=False)

    @classmethod
    def read(cls, name: str, results: Path) -> Source:
        path = results / name
        if not path.is_file():
            raise BlockError(f"no result file {path}")
        md_path = path.with_suffix(".md")
        md = md_path.read_text() if md_path.is_file() else None
        return cls(name, json.loads(path.read_text()), md)

    @property
    def intro(self) -> str | None:
        """The bench's own sentence about the run: the .md's first plain paragraph."""
        if self.md is None:
            return None
        for para in self.md.split("\n\n"):
            para = para.strip()
            if para and not para.startswith(("#", "|")) and not MACHINE.fullmatch(para):
                return para
        return None

    @property
    def machine(self) -> str | None:
        if isinstance(self.data, dict) and isinstance(self.data.get("machine"), str):
            return str(self.data["machine"])
        found = MACHINE.search(self.md or "")
        return found.group(0) if found else None

    @property
    def load(self) -> str:
        """The load average the file records, in words."""
        d = self.data
        if isinstance(d, dict):
            if isinstance(d.get("load"), list) and len(d["load"]) == 2:
                return f"{d['load'][0]:.1f} at the start, {d['load'][1]:.1f} at the end"
            rows = d.get("results") or d.get("long_form") or []
            if any(isinstance(r, dict) and ("load_avg" in r or "load" in r) for r in rows):
                return "per row, in the table"
        found = MD_LOAD.search(self.md or "")
        if found:
            return found.group("load") + f" (from {Path(self.name).with_suffix('.md')})"
        return "not recorded"


def with_intro(src: Source, *parts: str) -> str:
    """The bench's sentence about the run, then ``parts``, empty ones left out."""
    return "\n\n".join(p for p in (src.intro, *parts) if p)
