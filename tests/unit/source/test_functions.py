"""What a source deploy accepts, checked before any container runs: a table of hostile bodies."""

from __future__ import annotations

import pytest

from faasd.errors import InvalidRequest
from faasd.source.functions import parse_source

LIMIT = 1000


def test_a_single_file_is_its_own_entry_and_the_handler_defaults() -> None:
    source = parse_source({"runtime": "python", "files": {"f.py": "return 1"}}, LIMIT)
    assert (source.entry, source.handler, dict(source.files)) == ("f.py", "handler", {"f.py": b"return 1"})
    assert source.env() == ["FAAS_RUNTIME=python", "FAAS_ENTRY=f.py", "FAAS_HANDLER=handler"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([], "send a JSON object"),
        ({"runtime": "python", "files": {"f.py": "x"}, "extra": 1}, "unknown field(s) extra"),
        ({"files": {"f.py": "x"}}, "name the runtime"),
        ({"runtime": "python", "files": {}}, "at least one file"),
        ({"runtime": "python", "files": {"../f.py": "x"}}, "is not a relative path"),
        ({"runtime": "python", "files": {"/etc/passwd": "x"}}, "is not a relative path"),
        ({"runtime": "python", "files": {"a//b.py": "x"}}, "is not a relative path"),
        ({"runtime": "python", "files": {"./f.py": "x"}}, "an empty or '.' part"),
        ({"runtime": "python", "files": {"a\nb": "x"}}, "is not a relative path"),
        ({"runtime": "python", "files": {"f.py": 1}}, "is not a string"),
        ({"runtime": "python", "files": {"f.py": "x" * (LIMIT + 1)}}, "over the 1000 byte limit"),
        ({"runtime": "python", "files": {"a.py": "x", "b.py": "y"}}, "the entry None is not one of the files"),
        ({"runtime": "python", "files": {"a.py": "x"}, "entry": "b.py"}, "the entry 'b.py' is not one"),
        ({"runtime": "python", "files": {"a.py": "x"}, "handler": "a b"}, "is not an identifier"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(body: object, said: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_source(body, LIMIT)
    assert said in refused.value.message
