"""``faas new --manifest FILE``: a function described the way GraalFaaS describes one.

    {
      "id": "my-func",                 // required: the function's name
      "languageId": "python",          // required: "python" or "js"
      "functionName": "handler",       // optional, default "handler"
      "jsEvalAsModule": false,         // optional: the JS entry is an ES module
      "sourceFile": "my-function.py",  // required, or "source": the code inline
      "dependencies": {"greeter": {"file": "lib/greeter.py"}, "utils": {"source": "..."}},
      "runtime": "py312"               // optional, faasd's: the runtime (default: the language's)
    }

JSON with ``//`` and ``/* */`` comments. Files are read relative to the manifest. A dependency
becomes a module the entry imports by its name: ``greeter.py`` for Python, and for JS
``node_modules/greeter.js``, which ``require("greeter")`` finds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

FIELDS = frozenset(
    {"id", "languageId", "functionName", "jsEvalAsModule", "sourceFile", "source", "dependencies", "runtime"}
)
# languageId -> the runtime by default, the entry's name (by jsEvalAsModule), a dependency's file
LANGUAGES = {
    "python": ("python", ("handler.py", "handler.py"), "{}.py"),
    "js": ("node", ("index.js", "index.mjs"), "node_modules/{}.js"),
}


def strip_comments(text: str) -> str:
    """``text`` less its ``//`` and ``/* */`` comments, strings left as they are (JSONC)."""
    out, i, quoted = [], 0, False
    while i < len(text):
        char = text[i]
        if quoted:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1 : i + 2])
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
            out.append(char)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise click.UsageError("the manifest has a /* comment that never ends")
            i = end + 2
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def read_manifest(path: Path) -> tuple[str, dict[str, Any]]:
    """The function's name and the body of its source deploy, from the manifest at ``path``."""
    try:
        manifest = json.loads(strip_comments(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.UsageError(f"--manifest {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise click.UsageError(f"--manifest {path}: not a JSON object")
    unknown = sorted(set(manifest) - FIELDS)
    if unknown:
        raise click.UsageError(
            f"--manifest {path}: unknown field {unknown[0]!r} (the fields: {', '.join(sorted(FIELDS))})"
        )
    for field in ("id", "languageId"):
        if not isinstance(manifest.get(field), str):
            raise click.UsageError(f"--manifest {path}: {field!r} is missing or not a string")
    if manifest["languageId"] not in LANGUAGES:
        raise click.UsageError(f"--manifest {path}: languageId {manifest['languageId']!r} is not one of python, js")
    runtime, entries, dependency_file = LANGUAGES[manifest["languageId"]]
    entry = entries[bool(manifest.get("jsEvalAsModule", False))]
    files = {entry: _code(manifest, path.parent, "the manifest")}
    dependencies = manifest.get("dependencies") or {}
    if not isinstance(dependencies, dict):
        raise click.UsageError(f"--manifest {path}: 'dependencies' maps names to {{'file'}} or {{'source'}}")
    for name, dependency in dependencies.items():
        if not isinstance(dependency, dict) or set(dependency) - {"file", "source"}:
            raise click.UsageError(f"--manifest {path}: dependency {name!r} is {{'file': PATH}} or {{'source': CODE}}")
        files[dependency_file.format(name)] = _code(
            {"sourceFile": dependency.get("file"), "source": dependency.get("source")},
            path.parent,
            f"dependency {name!r}",
        )
    body = {"runtime": manifest.get("runtime", runtime), "files": files, "entry": entry}
    return manifest["id"], body | {"handler": manifest.get("functionName", "handler")}


def _code(fields: dict[str, Any], directory: Path, what: str) -> str:
    """The code ``fields`` give inline (``source``) or by file (``sourceFile``), one of the two."""
    inline, file = fields.get("source"), fields.get("sourceFile")
    if (inline is None) == (file is None):
        raise click.UsageError(f"{what} gives its code as one of 'sourceFile' (or 'file') and 'source'")
    if inline is not None:
        if not isinstance(inline, str):
            raise click.UsageError(f"{what}: 'source' is not a string")
        return inline
    try:
        return (directory / str(file)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{what}: cannot read {file}: {exc}") from None
