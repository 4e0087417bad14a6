"""GraalFaaS-style manifests read into a source deploy: comments, files, inline sources, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from faas_cli.manifest import read_manifest, strip_comments


def test_comments_go_and_strings_stay() -> None:
    text = '// lead\n{"a": "x // y", /* c */ "b": "/* z */", "c": "q\\" // r"} // tail'
    assert json.loads(strip_comments(text)) == {"a": "x // y", "b": "/* z */", "c": 'q" // r'}


def test_a_manifest_with_dependencies_becomes_files(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "h.py").write_text("def run(e): pass\n")
    (tmp_path / "lib" / "g.py").write_text("G = 1\n")
    manifest = {
        "id": "f",
        "languageId": "python",
        "functionName": "run",
        "sourceFile": "h.py",
        "dependencies": {"greeter": {"file": "lib/g.py"}, "utils": {"source": "U = 2\n"}},
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    assert read_manifest(tmp_path / "m.json") == (
        "f",
        {
            "runtime": "python",
            "files": {"handler.py": "def run(e): pass\n", "greeter.py": "G = 1\n", "utils.py": "U = 2\n"},
            "entry": "handler.py",
            "handler": "run",
        },
    )
    js = {"id": "j", "languageId": "js", "jsEvalAsModule": True, "source": "export function handler() {}"}
    (tmp_path / "j.json").write_text(json.dumps(js | {"dependencies": {"d": {"source": "1"}}}))
    assert read_manifest(tmp_path / "j.json")[1]["files"] == {
        "index.mjs": "export function handler() {}",
        "node_modules/d.js": "1",
    }


@pytest.mark.parametrize(
    ("manifest", "said"),
    [
        ({"id": "f", "languageId": "python", "source": "x", "extra": 1}, "unknown field 'extra'"),
        ({"languageId": "python", "source": "x"}, "'id' is missing"),
        ({"id": "f", "languageId": "ruby", "source": "x"}, "languageId 'ruby' is not one of python, js"),
        ({"id": "f", "languageId": "python"}, "one of 'sourceFile' (or 'file') and 'source'"),
        ({"id": "f", "languageId": "python", "source": "x", "sourceFile": "y"}, "one of 'sourceFile'"),
        ({"id": "f", "languageId": "python", "sourceFile": "missing.py"}, "cannot read missing.py"),
        ({"id": "f", "languageId": "python", "source": "x", "dependencies": {"d": {"url": "u"}}}, "dependency 'd' is"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(tmp_path: Path, manifest: dict[str, object], said: str) -> None:
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(click.UsageError) as refused:
        read_manifest(tmp_path / "m.json")
    assert said in refused.value.message
