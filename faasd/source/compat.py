"""The request and response shapes of go-faas, on faasd's source functions.

go-faas names a script by a path (``math/add``) and a language (``javascript``, ``typescript``,
``python``); its code is a script body. faasd keeps it as a source function whose name is the
path made a function name (``function_for_path``), on the runtime named after the language
(``RUNTIMES``), and answers with the shapes go-faas documents: ``{"path", "language",
"version"}`` for an upload (the version is the upload's Unix time), ``{"data", "type"}`` for a run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from faasd.errors import InvalidRequest

# go-faas's languages, by the runtime that runs them and the file the script becomes.
RUNTIMES = {"python": ("python", "handler.py"), "javascript": ("node", "index.js"), "typescript": ("node", "index.ts")}
UPLOAD_FIELDS = frozenset({"path", "language", "code"})
RUN_NOW_FIELDS = frozenset({"language", "code", "input", "stream"})
MAX_PATH = 200


def function_for_path(path: str) -> str:
    """The function a go-faas path names: lower-cased, each run of other characters a '-', at
    most 63 characters (``math/add`` -> ``math-add``, ``Reports/Daily_Total`` -> ``reports-daily-total``)."""
    if not isinstance(path, str) or not path.strip("/") or len(path) > MAX_PATH:
        raise InvalidRequest("'path' names the script, e.g. math/add")
    name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise InvalidRequest(f"the path {path[:80]!r} has no letter or digit to name a function by")
    return name


def checked(body: Any, fields: frozenset[str], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"send a JSON object with {', '.join(sorted(fields))}")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}: the route takes {', '.join(sorted(fields))}")
    for field in required:
        if not isinstance(body.get(field), str):
            raise InvalidRequest(f"{field!r} is missing or not a string")
    return body


def script_body(language: str, code: str) -> dict[str, Any]:
    """go-faas's script body as the body of a source deploy: one file, on the language's runtime."""
    if language not in RUNTIMES:
        raise InvalidRequest(f"unknown language {language!r}: {', '.join(sorted(RUNTIMES))}")
    runtime, entry = RUNTIMES[language]
    return {"runtime": runtime, "files": {entry: code}, "entry": entry}


def upload_request(body: Any) -> tuple[str, dict[str, Any]]:
    """The function name and source deploy body of a go-faas ``POST /upload``."""
    body = checked(body, UPLOAD_FIELDS, ("path", "language", "code"))
    return function_for_path(body["path"]), script_body(body["language"], body["code"])


def run_now_request(body: Any) -> tuple[dict[str, Any], Any, bool]:
    """The source body, event and stream flag of a go-faas ``POST /run-now``; ``input`` is JSON
    text (or already an object)."""
    body = checked(body, RUN_NOW_FIELDS, ("language", "code"))
    return script_body(body["language"], body["code"]), event_of(body.get("input")), body.get("stream") is True


def event_of(value: Any) -> Any:
    """go-faas's ``input``: a JSON text is parsed, anything else is the event as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def run_answer(result: Any) -> dict[str, Any]:
    """go-faas's ``{"data", "type"}``: text for a string, json for anything else."""
    return {"data": result, "type": "text" if isinstance(result, str) else "json"}


def failure(answer: dict[str, Any]) -> dict[str, Any]:
    """What a run that failed answers: its error and the traceback the code left on stderr."""
    return {"error": answer["error"], "stderr": answer["stderr"]}


def stream_end(answer: dict[str, Any]) -> tuple[str, Any]:
    """The last event of a streamed run: ``result`` with the return value, as a deployed
    function's stream ends, or ``error`` with the failure."""
    return ("error", failure(answer)) if "error" in answer else ("result", answer["result"])
