#!/usr/bin/env python3
"""A TLS line-echo server standing in for Firestore in the Istio-shaped test.

  tls_echo.py PORT CERT KEY

PORT 0 picks a free port; the server prints "listening on 127.0.0.1:<port>" once it listens.

Each connection gets its lines echoed back; the line "bye" closes it. Connections are served
concurrently, so a pooled connection can stay open while new ones come and go.
"""
import socketserver
import ssl
import sys


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            tls = CONTEXT.wrap_socket(self.request, server_side=True)
            f = tls.makefile("rwb", buffering=0)
            for line in f:
                if line.strip() == b"bye":
                    break
                f.write(line)
            tls.close()
        except (OSError, ssl.SSLError):
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CONTEXT.load_cert_chain(cert, key)
    with Server(("127.0.0.1", port), Handler) as server:
        print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
        server.serve_forever()
