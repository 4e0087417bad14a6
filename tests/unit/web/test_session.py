"""The web page's session cookie: derived from the token, and not enough alone to change anything."""

import pytest
from aiohttp.test_utils import make_mocked_request

from faasd.web.session import COOKIE, has_session, is_public, session_value

TOKEN = "t" * 43


def request(method: str, path: str, cookie: str | None, page_header: bool = False):
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else {}
    if page_header:
        headers["X-Faasd-Web"] = "1"
    return make_mocked_request(method, path, headers=headers)


def test_the_cookie_is_derived_from_the_token_and_holds_none_of_it() -> None:
    value = session_value(TOKEN)
    assert TOKEN not in value and value == session_value(TOKEN) and value != session_value("u" * 43)


@pytest.mark.parametrize(
    ("method", "cookie", "page_header", "accepted"),
    [
        ("GET", session_value(TOKEN), False, True),
        ("POST", session_value(TOKEN), True, True),
        ("POST", session_value(TOKEN), False, False),  # another site's form could send this
        ("DELETE", session_value(TOKEN), False, False),
        ("GET", session_value("u" * 43), False, False),
        ("GET", TOKEN, False, False),  # the token itself is no session
        ("GET", "", False, False),
        ("GET", None, False, False),
    ],
)
def test_a_session_needs_the_right_cookie_and_to_change_anything_the_page_header(
    method: str, cookie: str | None, page_header: bool, accepted: bool
) -> None:
    assert has_session(request(method, "/v1/functions", cookie, page_header), TOKEN) is accepted


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/", True),
        ("/ui/", True),
        ("/ui/login", True),
        ("/ui/static/app.js", True),
        ("/ui/logout", False),
        ("/v1/functions", False),
        ("/metrics", False),
        ("/ui/functions/hello/request", False),
    ],
)
def test_only_the_page_and_its_assets_load_without_a_session(path: str, public: bool) -> None:
    assert is_public(make_mocked_request("GET", path)) is public
