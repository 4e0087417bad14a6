"""The page's request form: what it may send to a function, checked before anything is sent."""

import pytest

from faasd.errors import InvalidRequest
from faasd.web.probe import MAX_REQUEST_BYTES, parse_probe


def test_a_plain_form_is_taken_as_given() -> None:
    fields = {"method": "post", "path": "/echo?x=1", "body": "hi", "content_type": "text/plain"}
    assert parse_probe(fields) == ("POST", "/echo?x=1", b"hi", "text/plain")
    assert parse_probe({}) == ("GET", "/", b"", None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([], "JSON object"),
        ({"method": "CONNECT"}, "is not one of"),
        ({"method": "GET / HTTP/1.1\r\nHost: x"}, "is not one of"),
        ({"path": "http://127.0.0.1/"}, "starts with /"),
        ({"path": "/a b"}, "no spaces"),
        ({"path": "/\r\nHost: evil"}, "no spaces"),
        ({"path": "/" + "a" * 2048}, "at most 2048"),
        ({"path": 7}, "starts with /"),
        ({"body": "x" * (MAX_REQUEST_BYTES + 1)}, "at most"),
        ({"body": {"a": 1}}, "text"),
        ({"content_type": "text/plain\r\nX-Evil: 1"}, "one line"),
    ],
)
def test_hostile_forms_are_refused(fields: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse_probe(fields)
