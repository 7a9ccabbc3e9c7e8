# An async Lambda handler that imports nothing: the bootstrap imports
# asyncio itself, only because the handler is a coroutine function.
async def _twice(x):
    return x * 2


async def lambda_handler(event, context):
    n = await _twice(21)
    return {"statusCode": 200, "headers": {"x-handler": "lambda-python-async"}, "body": f"awaited {n} {event['rawPath']}"}
