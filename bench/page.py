"""docs/benchmarks.md, shared by the benchmarks: each owns one `## ` section and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(doc: str, title: str, section: str) -> str:
    """`doc` with its `## {title}` section (up to the next `## ` heading) replaced by `section`, or with
    `section` appended when it has none; every other section is kept as it is."""
    lines = doc.rstrip("\n").split("\n") if doc.strip() else []
    heading = f"## {title}"
    new = section.rstrip("\n").split("\n")
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + new + ([""] + tail if tail else [])
    else:
        lines = lines + ([""] if lines else []) + new
    return "\n".join(lines) + "\n"


def write_section(title: str, section: str, path: Path = DOC) -> None:
    """Put `section` (starting with its `## {title}` heading) into the page at `path`."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(doc, title, section))
