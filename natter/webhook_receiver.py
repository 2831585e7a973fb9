"""``natter webhook-receiver``: a minimal receiver of natter's webhooks, to try them and to copy.

It listens on ``HOST:PORT``, checks each POST's ``Natter-Signature`` against the secret
(:func:`shared.webhook_signing.verify`: HMAC-SHA256 of ``"<timestamp>.<body>"``, constant-time,
5 minutes of clock tolerance), answers 401 to a bad signature and 204 otherwise, drops an event
whose ``id`` it has already seen (delivery is at least once), and prints one JSON line per new
event. Standard library only; one thread per request.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.webhook_signing import HDR_SIGNATURE, HDR_TIMESTAMP, verify

#: Event ids remembered for de-duplication.
SEEN_MAX = 10_000


def make_server(host: str, port: int, secret: str, out: Any = sys.stdout) -> ThreadingHTTPServer:
    """A server that verifies, de-duplicates and prints deliveries (``serve_forever`` it)."""
    seen: OrderedDict[str, None] = OrderedDict()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            if not verify(secret, body, self.headers.get(HDR_TIMESTAMP), self.headers.get(HDR_SIGNATURE)):
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            with lock:
                new = event.get("id") not in seen
                if new:
                    seen[event.get("id")] = None
                    while len(seen) > SEEN_MAX:
                        seen.popitem(last=False)
            if new:
                out.write(json.dumps(event) + "\n")
                out.flush()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    return ThreadingHTTPServer((host, port), Handler)
