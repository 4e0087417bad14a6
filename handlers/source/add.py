"""A function from source: faas new add --runtime python --code handlers/source/add.py"""


def handler(event, context):
    print(f"adding for request {context.request_id}")  # to the function's log
    return {"sum": event.get("a", 0) + event.get("b", 0)}
