"""The example function: ``GET /`` says hello, ``/echo`` returns the request as JSON."""

import json

from faas_handler import serve


def app(environ, start_response):
    if environ["PATH_INFO"] == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        echo = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "body": body.decode("utf-8", "replace"),
            "request_id": environ["faas.metadata"].get("id"),
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(echo).encode() + b"\n"]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Hello from faasd\n"]


if __name__ == "__main__":
    serve(app)
