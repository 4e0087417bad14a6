import base64

from helpers import greeting

print("module loaded")


def handler(event, context):
    print(f"called with {event!r}")
    kind = event.get("kind") if isinstance(event, dict) else None
    if kind == "text":
        return greeting(event.get("name", "world"))
    if kind == "bytes":
        return b"\x00\x01binary"
    if kind == "shape":
        return {"statusCode": 201, "headers": {"X-Made": "yes"}, "body": {"made": True}}
    if kind == "b64":
        return {"statusCode": 200, "body": base64.b64encode(b"raw").decode(), "isBase64Encoded": True}
    if kind == "fail":
        raise ValueError("asked to fail")
    if kind == "number":
        return 42
    return {
        "event": event,
        "request_id": context.request_id,
        "function": context.function,
        "version": context.version,
        "method": context.method,
        "path": context.path,
        "agent": context.headers.get("x-agent"),
        "remaining": context.remaining_ms() > 0,
    }
