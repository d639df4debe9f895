#!/usr/bin/env python3
"""`plants` on Firestore: the app dbfault's story starts with. Every half second it writes a new
plant document to Firestore with Google's official client library (google-cloud-firestore, over
gRPC), through one long-lived channel — one HTTP/2 connection, which an Istio sidecar sees as
plain TCP — and logs what an operator would grep for:

    writing a new plant to Firestore... ✅ success (fern-3, 4 ms)
    writing a new plant to Firestore... 🚫 Failed adding plant: 503 failed to connect to all addresses; ...

It knows nothing of dbfault. With FIRESTORE_EMULATOR_HOST=host:port set, the client talks to the
Firestore emulator (plaintext); pointed at Envoy, the database goes away and comes back on the
operator's command.

Environment: FIRESTORE_EMULATOR_HOST, PLANTS_PROJECT (default plants-demo), PLANTS_INTERVAL_MS
(default 500), PLANTS_TIMEOUT_S (per write, default 3), PLANTS_WRITES (stop after that many; default:
never).
"""
import os
import sys
import time
import warnings

# The client library warns about Python versions it will stop supporting: not the app's news.
warnings.filterwarnings("ignore", category=FutureWarning)

from google.api_core import exceptions  # noqa: E402
from google.cloud import firestore  # noqa: E402

SPECIES = ["fern", "monstera", "ficus", "cactus", "basil", "orchid", "aloe", "ivy"]


def main():
    project = os.environ.get("PLANTS_PROJECT", "plants-demo")
    interval = int(os.environ.get("PLANTS_INTERVAL_MS", "500")) / 1000
    timeout = float(os.environ.get("PLANTS_TIMEOUT_S", "3"))
    writes = int(os.environ.get("PLANTS_WRITES", "0")) or None
    # One client, one channel, for the app's whole life (as a service keeps its client).
    client = firestore.Client(project=project)
    plants = client.collection("plants")
    n = 0
    while writes is None or n < writes:
        started = time.monotonic()
        name = f"{SPECIES[n % len(SPECIES)]}-{n}"
        try:
            # No client-side retry: the app's own loop is its retry, so an outage shows at once.
            plants.add({"name": name, "planted_at": firestore.SERVER_TIMESTAMP}, retry=None, timeout=timeout)
            ms = int((time.monotonic() - started) * 1000)
            line = f"writing a new plant to Firestore... ✅ success ({name}, {ms} ms)"
        except exceptions.GoogleAPICallError as err:
            line = f"writing a new plant to Firestore... 🚫 Failed adding plant: {' '.join(str(err).split())}"
        print(line, flush=True)
        n += 1
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
