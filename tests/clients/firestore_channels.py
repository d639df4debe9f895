#!/usr/bin/env python3
"""N writes to Firestore, each through a new client (a new gRPC channel: a new TCP connection), so
that a rule drawn per connection meets N connections. Prints {"ok": a, "failed": b} as JSON.

    firestore_channels.py --port PORT --writes N
"""
import argparse
import json
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import grpc  # noqa: E402
from google.api_core import exceptions  # noqa: E402
from google.cloud import firestore  # noqa: E402

# gRPC shares subchannels (TCP connections) between channels to the same address by default: a
# new client could reuse the previous client's connection, or fail at once while the shared
# subchannel backs off after an aborted connection. A subchannel pool per channel makes every
# client's channel its own connection, which is what this program counts.
_insecure_channel = grpc.insecure_channel


def _own_subchannels(target, options=None, *args, **kwargs):
    options = list(options or []) + [("grpc.use_local_subchannel_pool", 1)]
    return _insecure_channel(target, options, *args, **kwargs)


grpc.insecure_channel = _own_subchannels


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
