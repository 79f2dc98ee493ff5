"""Markdown tables and the cell formats the benchmark tables share."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table: floats with 3 decimals, None as an empty cell."""

    def cell(v: object) -> str:
        if v is None:
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage: 0.125 -> '12.5 %'."""
    return f"{x * 100:.{digits}f} %"


def signed_pct(x: float, digits: int = 1) -> str:
    """A relative change as a signed percentage: 0.078 -> '+7.8 %'."""
    return f"{x * 100:+.{digits}f} %"


def verdict(ok: bool | None) -> str:
    """A goal's outcome in words."""
    return "not measured" if ok is None else ("met" if ok else "**not met**")
