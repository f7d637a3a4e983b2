"""The README's Markdown tables render as tables, each with all its rows and cells: a blank line inside a table ends
it in every Markdown renderer, and the rows after it showed as loose text with pipes (the Nodes table lost eight).
Rendered with markdown-it-py (CommonMark + GFM tables, the dialect GitHub and the Comfy Registry render)."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "benchmarks").glob("**/README.md"))]


def cells(line: str) -> int:
    """How many cells a table row's source has (pipes escaped as \\| are text)."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def tables(text: str) -> list[tuple[range, int, int]]:
    """Each rendered table: its source lines, its rows (header included) and its header's cells."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    found = []
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            close = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
            rows = sum(1 for t in tokens[i:close] if t.type == "tr_open")
            header = sum(1 for t in tokens[i:close] if t.type == "th_open")
            found.append((range(*token.map), rows, header))
    return found


def pipe_lines(text: str) -> list[int]:
    """The source lines that start a table row, outside code blocks."""
    lines, fenced = [], False
    for n, line in enumerate(text.splitlines()):
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("|"):
            lines.append(n)
    return lines


def test_every_table_renders_with_all_its_rows_and_cells():
    assert len(DOCUMENTS) > 1
    for doc in DOCUMENTS:
        text = doc.read_text()
        source = text.splitlines()
        rendered = tables(text)
        inside = {n for span, _, _ in rendered for n in span}
        loose = [source[n][:60] for n in pipe_lines(text) if n not in inside]
        assert loose == [], f"{doc.relative_to(REPO)}: rows outside any table (a blank line ends a table): {loose}"
        for span, rows, header in rendered:
            row_lines = [n for n in pipe_lines(text) if n in span]
            assert rows == len(row_lines) - 1, (doc.name, span)  # minus the |---| separator
            wrong = [source[n][:60] for n in row_lines if cells(source[n]) != header]
            assert wrong == [], f"{doc.relative_to(REPO)}: rows with another cell count than the header: {wrong}"


def test_the_nodes_table_has_every_node():
    text = (REPO / "README.md").read_text()
    nodes_section = text[text.index("## Nodes"):text.index("### How the gate works")]
    span, rows, _ = tables(nodes_section)[0]
    assert rows - 1 == nodes_section.count("\n| **")  # every node row, none lost after a blank line
    for name in ("PersonalVideoLoadIdentityRewardModel", "PersonalVideoTrainIdentityAdapter",
                 "PersonalVideoLoadDlibFaceEvaluator", "PersonalVideoEvaluateVideo", "PersonalVideoPromptBank"):
        assert name in "\n".join(nodes_section.splitlines()[span.start:span.stop]), name
