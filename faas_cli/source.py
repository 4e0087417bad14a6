"""What ``faas new --runtime`` sends: a function's source files, read from the paths given.

``--code FILE`` (repeatable) sends each file by its name; ``--code DIR`` sends every file under
it by its path inside DIR (hidden files and ``__pycache__``/``node_modules`` left out). The entry
is ``--entry``, else the one file sent, else the first of the usual names found.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

SKIPPED = frozenset({"__pycache__", "node_modules"})
USUAL_ENTRIES = ("handler.py", "main.py", "index.ts", "index.js", "handler.js", "handler.ts")


def read_code(paths: Iterable[Path]) -> dict[str, str]:
    """The files at ``paths`` by the name faasd keeps them under; a UsageError for what cannot be sent."""
    files: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file() and not _skipped(p.relative_to(path))]
            files |= {p.relative_to(path).as_posix(): _text(p) for p in found}
        elif path.is_file():
            files[path.name] = _text(path)
        else:
            raise click.UsageError(f"--code {path}: no such file or directory")
    if not files:
        raise click.UsageError("--code names no file to send")
    return files


def entry_of(files: dict[str, str], entry: str | None) -> str:
    """The entry file: the one given, the only one, or the first usual name present."""
    if entry is not None:
        return entry
    if len(files) == 1:
        return next(iter(files))
    for name in USUAL_ENTRIES:
        if name in files:
            return name
    raise click.UsageError(f"say which file is the entry with --entry (one of {', '.join(sorted(files)[:5])}...)")


def _skipped(relative: Path) -> bool:
    return any(part.startswith(".") or part in SKIPPED for part in relative.parts)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.UsageError(f"{path} is not UTF-8 text: only source files are sent") from None
