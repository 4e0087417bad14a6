"""The web page: a view of the functions for a person with a browser, on the ``--listen`` address.

It is served only by the TCP app, which asks for the API token: the page and its assets hold
no data and load without it, and everything the page shows comes from the control API, read
with a session cookie the login form sets once the token is given (``faasd.web.session``). The
token itself never travels in a URL. One route is the page's own: a request sent to a function
from the page's form, answered with what the function answered (``faasd.web.probe``).

The assets are plain HTML, CSS and JavaScript in ``static/``, shipped in the package: no
build step, no CDN, no framework.
"""
