"""The README's benchmark figures are generated from bench/results, never typed.

bench/readme_tables.py renders every block between ``<!-- bench:NAME source=FILE -->``
markers from the result file the marker names; these tests run it in check mode on the
repository's README, and show that check mode catches an edited number, a README
without markers and an unclosed marker.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def tables() -> Iterator[ModuleType]:
    """bench/readme_tables.py imported as its CLI runs it: bench/ first on the path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        module = importlib.import_module("readme_tables")
    yield module
    # bench/'s top-level names (readme_tables, tables) are no packages of the project
    for name in [n for n in sys.modules if n.partition(".")[0] in ("readme_tables", "tables")]:
        del sys.modules[name]


def _first_block_body(text: str, name: str) -> tuple[int, int]:
    start = text.index(f"<!-- bench:{name}")
    return start, text.index(f"<!-- /bench:{name} -->", start)


def test_readme_blocks_match_the_result_files(
    tables: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = tables.main(["--check"])
    out = capsys.readouterr().out
    assert rc == 0, out
    text = README.read_text()
    used = set(re.findall(r"<!-- bench:([\w-]+)", text))
    # every renderer is in use: a block dropped from the README shows up here
    assert used == set(tables.RENDERERS), set(tables.RENDERERS) ^ used
    # each block names its source, as the footer line generated into it
    for m in tables.MARKER.finditer(text):
        assert "Generated from `bench/results/" in m.group("body")


def test_an_edited_number_in_a_block_fails_the_check(
    tables: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = README.read_text()
    start, end = _first_block_body(original, "server")
    block = original[start:end]
    assert "**+7.8 %**" in block  # the end-to-end median, as server.json gives it
    edited = original[:start] + block.replace("**+7.8 %**", "**+1.8 %**") + original[end:]
    copy = tmp_path / "README.md"
    copy.write_text(edited)

    assert tables.main(["--check", "--readme", str(copy)]) == 1
    diff = capsys.readouterr().out
    assert "-| end to end, as a client measures it" in diff and "**+1.8 %**" in diff
    assert "+| end to end, as a client measures it" in diff and "**+7.8 %**" in diff

    # without --check the block is rewritten from server.json, back to the committed text
    assert tables.main(["--readme", str(copy)]) == 0
    assert copy.read_text() == original


def test_a_readme_without_markers_fails_the_check(
    tables: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README before bench/readme_tables.py: every figure typed, no block."""
    copy = tmp_path / "README.md"
    copy.write_text(re.sub(r"<!-- /?bench:[^>]*-->\n", "", README.read_text()))
    assert tables.main(["--check", "--readme", str(copy)]) == 1
    assert "no <!-- bench:... --> blocks" in capsys.readouterr().out


def test_an_unclosed_marker_or_unknown_block_is_an_error(
    tables: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "README.md"
    copy.write_text("# x\n\n<!-- bench:core source=core.json -->\n| typed | 1.0 |\n")
    assert tables.main(["--check", "--readme", str(copy)]) == 2
    assert "without its closing marker" in capsys.readouterr().err
    copy.write_text("<!-- bench:nosuch -->\n<!-- /bench:nosuch -->\n")
    assert tables.main(["--check", "--readme", str(copy)]) == 2
    assert "no such renderer" in capsys.readouterr().err
    copy.write_text("<!-- bench:core source=missing.json -->\n<!-- /bench:core -->\n")
    assert tables.main(["--readme", str(copy)]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_source_parameter_repoints_a_block(tables: ModuleType, tmp_path: Path) -> None:
    """The lead's path: a new streaming run, the marker's source= edited, the script rerun."""
    results = tmp_path / "results"
    results.mkdir()
    data = json.loads((RESULTS / "streaming.json").read_text())
    data["results"] = data["results"][:1]
    data["results"][0].update(engine="whisper (quiet run)", final_p50=0.912, load_avg=[0.4, 0.6])
    (results / "streaming-quiet.json").write_text(json.dumps(data))
    copy = tmp_path / "README.md"
    copy.write_text(
        "<!-- bench:streaming source=streaming-quiet.json -->\n<!-- /bench:streaming -->\n"
    )

    assert tables.main(["--readme", str(copy), "--results", str(results)]) == 0
    text = copy.read_text()
    assert "| whisper (quiet run) |" in text and "| 0.912 |" in text
    assert "| final latency p50 <= 1.0 s | 0.9 s: met |" in text
    assert "load avg (start, end)" in text and "0.4, 0.6" in text
    assert "Generated from `bench/results/streaming-quiet.json`" in text
    assert tables.main(["--check", "--readme", str(copy), "--results", str(results)]) == 0


def test_load_table_follows_the_bench_columns(tables: ModuleType, tmp_path: Path) -> None:
    """bench/load.py now writes median and maximum: a rerun's table drops p95/p99 and the caveat."""
    results = tmp_path / "results"
    results.mkdir()
    old_rows = [  # the old format: p50, p95, p99 of 16 samples per row
        ["raw faster-whisper (baseline)", 1, 1.16, 4.54, 0.82, 1.26, 1.30, 1.0],
        ["server, batching off", 8, 1.12, 4.37, 6.9, 8.1, 8.3, 0.96],
        ["server, batch_size 4", 8, 1.2, 4.6, 5.8, 8.8, 9.0, 1.03],
    ]
    (results / "load-old.json").write_text(json.dumps(old_rows))
    rows = [
        ["raw faster-whisper (baseline)", 1, 1.1, 4.3, 0.8, 1.3, 1.0],
        ["server, batching off", 8, 1.0, 4.0, 7.0, 8.2, 0.91],
        ["server, batch_size 4", 8, 1.2, 4.6, 5.8, 9.0, 1.09],
    ]
    (results / "load.json").write_text(json.dumps(rows))
    new = tables.render_block("load", "", results)
    assert "| median s | max s |" in new and "p95" not in new and "predates" not in new
    assert "concurrency 8 +20 % (1.20 vs 1.00)" in new
    old = tables.render_block("load", "source=load-old.json", results)
    assert "| p50 s | p95 s | p99 s |" in old and "predates" in old


def test_robustness_tables_follow_what_a_run_recorded(tables: ModuleType, tmp_path: Path) -> None:
    """A newer robustness run adds CPU seconds and words in music; an empty section says so."""
    results = tmp_path / "results"
    results.mkdir()
    data = json.loads((RESULTS / "robustness.json").read_text())
    row = dict(data["long_form"][0], variant="music in the middle", cpu_s=412.0, words_in_music=3)
    data["long_form"] = [row]
    (results / "robustness-new.json").write_text(json.dumps(data))
    text = tables.render_block("robustness-longform", "source=robustness-new.json", results)
    assert "| CPU s (process) | words in music | load avg |" in text
    assert "| music in the middle | stts |" in text and "| 412 | 3 |" in text
    empty = tables.render_block("robustness-nonspeech", "source=robustness-new.json", results)
    assert "No non-speech rows in `robustness-new.json`" in empty


@pytest.fixture(scope="module")
def bench_reports() -> Iterator[dict[str, ModuleType]]:
    """bench/streaming.py and bench/short_context.py imported as their CLIs run them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        mp.setenv("HF_HUB_OFFLINE", "1")  # bench/common.py sets it; undone here
        modules = {n: importlib.import_module(n) for n in ("streaming", "short_context")}
    yield modules
    for name in [
        n
        for n in sys.modules
        if n.partition(".")[0] in ("streaming", "short_context", "common", "tables")
    ]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("bench", "block", "source"),
    [
        ("streaming", "streaming", "streaming.json"),
        ("streaming", "streaming", "streaming-greedy-final.json"),
        ("short_context", "short-context", "short_context.json"),
    ],
)
def test_a_bench_writes_the_tables_the_readme_shows(
    tables: ModuleType,
    bench_reports: dict[str, ModuleType],
    bench: str,
    block: str,
    source: str,
) -> None:
    """One definition of the columns: the .md a bench writes is the README's renderer on
    the same run (before, bench/streaming.py wrote its own table, without the worst
    backlog and with '9.3%' where the README says '9.3 %')."""
    data = json.loads((RESULTS / source).read_text())
    module = bench_reports[bench]
    report = module.report(data, source) if bench == "streaming" else module.report(data)
    # the README block is the bench's sentence and tables, then the footer naming the file
    assert report in tables.render_block(block, f"source={source}", RESULTS)
    # and the committed .md is what the bench writes (bench --render-only regenerates it)
    assert (RESULTS / source).with_suffix(".md").read_text() == report + "\n"
