# An AWS Lambda handler (API Gateway HTTP API, payload 2.0; our own test file).
import base64
import json


def lambda_handler(event, context):
    if event["rawPath"] == "/plain":
        return {"hello": "lambda"}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).hex()
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Handler": "lambda-python"},
        "cookies": ["seen=1"],
        "body": json.dumps({
            "version": event["version"],
            "method": event["requestContext"]["http"]["method"],
            "rawPath": event["rawPath"],
            "query": event.get("queryStringParameters"),
            "body": body,
            "b64": event["isBase64Encoded"],
            "requestId": context.aws_request_id,
            "function": context.function_name,
            "memory": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
        }),
    }
