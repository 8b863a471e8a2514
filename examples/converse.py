"""Calls Bedrock through the gateway the way the reference design's clients do: boto3 with
signature_version=UNSIGNED, one endpoint URL, and an `aws-endpoint-prefix` header added by a
before-call hook. The gateway signs with its own AWS credentials.

    .venv/bin/python examples/converse.py --endpoint http://127.0.0.1:8080 [--token JWT]
"""

import argparse

import boto3
from botocore import UNSIGNED
from botocore.config import Config


def gateway_client(service: str, endpoint: str, token: str | None = None, region: str = "us-east-1"):
    client = boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        config=Config(signature_version=UNSIGNED),
    )
    prefix = client.meta.service_model.endpoint_prefix

    def add_gateway_headers(params, **kwargs):
        params["headers"]["aws-endpoint-prefix"] = prefix
        if token:
            params["headers"]["Authorization"] = f"Bearer {token}"

    client.meta.events.register("before-call.*.*", add_gateway_headers)
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080")
    parser.add_argument("--token", help="a JWT, when the gateway requires authentication")
    parser.add_argument("--model", default="us.anthropic.claude-3-5-haiku-20241022-v1:0")
    parser.add_argument("--prompt", default="Say hello to the gateway in one sentence.")
    args = parser.parse_args()

    runtime = gateway_client("bedrock-runtime", args.endpoint, args.token)
    messages = [{"role": "user", "content": [{"text": args.prompt}]}]

    reply = runtime.converse(modelId=args.model, messages=messages)
    print("converse:", reply["output"]["message"]["content"][0]["text"])
    print("usage:", reply["usage"])

    print("converse-stream: ", end="", flush=True)
    stream = runtime.converse_stream(modelId=args.model, messages=messages)
    for event in stream["stream"]:
        if "contentBlockDelta" in event:
            print(event["contentBlockDelta"]["delta"]["text"], end="", flush=True)
        if "metadata" in event:
            print("\nusage:", event["metadata"]["usage"])


if __name__ == "__main__":
    main()
