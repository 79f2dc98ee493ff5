"""Render the README's benchmark blocks from the result files in bench/results/.

The README holds each generated block between two marker comments (HTML comments do
not render on GitHub):

    <!-- bench:streaming source=streaming.json -->
    ...generated text...
    <!-- /bench:streaming -->

The name after ``bench:`` picks the renderer; ``source=`` names the result file(s) it
reads (comma-separated, relative to bench/results/; each renderer has a default). To
point a block at another run, edit its ``source=`` and run this script.

    python bench/readme_tables.py           # rewrite the blocks in README.md in place
    python bench/readme_tables.py --check   # exit 1 with a diff when README.md is stale

Numbers are read from the ``.json`` a bench wrote; the ``.md`` beside it (the bench's own
output) supplies only the sentence that describes the run (corpus, machine, load).

This module holds the markers, the block replacement, the CLI and the registry of
renderers; the renderers live in bench/tables/, one module per family of benchmarks, and
share their tables' columns with the bench scripts (bench/tables/columns.py).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tables import jobs, memory, recognition, throughput
from tables.source import BlockError, Source

__all__ = ["MARKER", "RENDERERS", "BlockError", "Source", "main", "render_block", "render_readme"]

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH.parent / "README.md"

MARKER = re.compile(
    r"<!-- bench:(?P<name>[\w-]+)(?P<params>(?:[ \t]+[\w-]+=[^\s>]+)*)[ \t]*-->\n"
    r"(?P<body>.*?)"
    r"<!-- /bench:(?P=name) -->",
    re.S,
)
OPENING = re.compile(r"<!-- bench:")

Renderer = Callable[[list[Source]], str]

# block name -> (the result file(s) it reads unless its marker says source=, renderer)
RENDERERS: dict[str, tuple[str, Renderer]] = {
    "core": ("core.json", throughput.render_core),
    "server": ("server.json", throughput.render_server),
    "load": ("load.json", throughput.render_load),
    "engines": ("engines.json", throughput.render_engines),
    "streaming": ("streaming.json", recognition.render_streaming),
    "short-context": ("short_context.json", recognition.render_short_context),
    "robustness-nonspeech": ("robustness-s5.json", recognition.render_nonspeech),
    "robustness-longform": ("robustness.json", recognition.render_longform),
    "soak-blocks": ("soak.json", memory.render_soak_blocks),
    "soak-runs": (
        "soak.json,soak-wyoming.json,soak-wyoming-2000.json,"
        "soak-batched.json,soak-batched-arena2.json,soak-batched-mallopt.json",
        memory.render_soak_runs,
    ),
    "unload": ("unload.json", memory.render_unload),
    "jobs": ("jobs.json", jobs.render_jobs),
    "batch": ("batch.json", jobs.render_batch),
}


def render_block(name: str, params: str, results: Path) -> str:
    """One block's text: the renderer's output and a footer naming its source files."""
    if name not in RENDERERS:
        raise BlockError(f"<!-- bench:{name} -->: no such renderer (known: {', '.join(RENDERERS)})")
    default, fn = RENDERERS[name]
    options = dict(p.split("=", 1) for p in params.split())
    unknown = set(options) - {"source"}
    if unknown:
        raise BlockError(
            f"<!-- bench:{name} -->: unknown parameter(s) {', '.join(sorted(unknown))}"
        )
    names = options.get("source", default).split(",")
    sources = [Source.read(n, results) for n in names]
    files = ", ".join(f"`bench/results/{s.name}`" for s in sources)
    machines = sorted({s.machine or "not recorded" for s in sources})
    per_file = [s.load for s in sources]
    if len(set(per_file)) == 1:
        loads = per_file[0] + (" in any of them" if len(sources) > 1 else "")
    else:
        loads = "; ".join(f"{s.name}: {s.load}" for s in sources)
    footer = (
        f"<sub>Generated from {files} by `bench/readme_tables.py`; machine: "
        f"{', '.join(machines)}; load average: {loads}.</sub>"
    )
    return f"{fn(sources).rstrip()}\n\n{footer}\n"


def render_readme(text: str, results: Path = RESULTS) -> str:
    """The README with every block rewritten from the result files."""
    blocks = list(MARKER.finditer(text))
    if len(blocks) != len(OPENING.findall(text)):
        closed = {m.start() for m in blocks}
        for m in OPENING.finditer(text):
            if m.start() not in closed:
                line = text.count("\n", 0, m.start()) + 1
                raise BlockError(f"README line {line}: a bench marker without its closing marker")
    out = []
    pos = 0
    for m in blocks:
        head = text[m.start() : m.start("body")]
        body = render_block(m.group("name"), m.group("params"), results)
        out += [text[pos : m.start()], head, "\n", body, "\n", f"<!-- /bench:{m.group('name')} -->"]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff when README is stale"
    )
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    try:
        new = render_readme(text, args.results)
    except BlockError as exc:
        print(f"readme_tables: {exc}", file=sys.stderr)
        return 2
    blocks = len(MARKER.findall(text))
    if args.check:
        if blocks == 0:
            print(
                f"{args.readme}: no <!-- bench:... --> blocks: its figures are typed, not generated"
            )
            return 1
        if new == text:
            print(f"{args.readme}: {blocks} benchmark blocks match bench/results")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"{args.readme} (as committed)",
                f"{args.readme} (from the result files)",
            )
        )
        print(f"\n{args.readme} differs from the result files: run python bench/readme_tables.py")
        return 1
    if blocks == 0:
        print(f"{args.readme}: no <!-- bench:... --> blocks", file=sys.stderr)
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: {blocks} benchmark blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
