#!/usr/bin/env python3
"""N writes to Firestore, each through a new client (a new gRPC channel: a new TCP connection), so
that a rule drawn per connection meets N connections. Prints {"ok": a, "failed": b} as JSON.

    firestore_channels.py --port PORT --writes N
"""
import argparse
import json
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

from google.api_core import exceptions  # noqa: E402
from google.cloud import firestore  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writes", type=int, default=60)
    args = parser.parse_args()
    import os
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{args.port}"
    ok = failed = 0
    for i in range(args.writes):
        client = firestore.Client(project="plants-demo")
        try:
            client.collection("channels").add({"n": i}, retry=None, timeout=5)
            ok += 1
        except exceptions.GoogleAPICallError:
            failed += 1
        finally:
            client.close()
    print(json.dumps({"ok": ok, "failed": failed}))


if __name__ == "__main__":
    main()
