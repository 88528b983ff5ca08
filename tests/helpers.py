"""Reading what the recipes write as a user reads it: markdown tables and rich console tables as rows."""

from __future__ import annotations


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table in a markdown text, each as a list of rows keyed by the header's cells."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        is_header = lines[i].startswith("|") and i + 1 < len(lines)
        if is_header and set(lines[i + 1].replace("|", "").strip()) <= set("-: ") and "-" in lines[i + 1]:
            header = _cells(lines[i])
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]))))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def console_table(text: str) -> list[list[str]]:
    """The body rows of a rich table printed to a console (cells split on its box-drawing bars)."""
    rows = []
    for line in text.splitlines():
        if line.count("│") >= 2:
            rows.append([c.strip() for c in line.strip().strip("│").split("│")])
    return rows


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]
