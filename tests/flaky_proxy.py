"""A fault-injecting HTTP proxy for the object-store tests: object storage throttles (503
SlowDown), fails (500), drops connections halfway through a body and stalls; this puts all of
that between the clients and an emulator, on 127.0.0.1, so a test can hold a run to the same
result as one without faults.

>>> proxy = FlakyProxy("http://127.0.0.1:9000", every=7).start()  # doctest: +SKIP
>>> options = {"client_kwargs": {"endpoint_url": proxy.url}}       # doctest: +SKIP

Every ``every``-th request gets the next fault of ``faults`` in turn: ``503`` and ``500`` are
answered here without reaching the server (as a throttled request is), ``reset`` forwards the
request and then sends the response's headers and half its body and resets the connection (to a
GET: one that falls on another request goes to the next GET), ``delay`` waits ``delay`` seconds and forwards. :meth:`go_down` answers
every request with a 503 until :meth:`come_back`; ``down_after(method, path)`` turns the proxy
down right after the first request it matches has been forwarded.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import socket
import struct
import threading
import time
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")


class FlakyProxy:
    def __init__(self, upstream: str, every: int = 0, faults=("503", "500", "reset", "delay"),
                 delay: float = 1.0, down_after=None):
        up = urllib.parse.urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        self.every, self.faults, self.delay, self.down_after = every, tuple(faults), delay, down_after
        self.requests = 0
        self.reset_pending = False
        self.injected: collections.Counter = collections.Counter()
        self.log: list[tuple[str, str, str]] = []  # (method, path, what happened), for a failing test's message
        self.body_bytes: collections.Counter = collections.Counter()  # response bytes from the server, by method
        self.down = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            pass
        Handler.proxy = proxy
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FlakyProxy:
        threading.Thread(target=self.server.serve_forever, name="flaky-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        self.down.set()

    def come_back(self) -> None:
        self.down_after = None
        self.down.clear()

    def _next_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            fault = None
            if self.down.is_set():
                fault = "down"
            elif self.every and self.requests % self.every == 0:
                fault = self.faults[(self.requests // self.every - 1) % len(self.faults)]
            if fault == "reset" and method != "GET":  # kept for the next GET
                self.reset_pending, fault = True, None
            elif fault is None and self.reset_pending and method == "GET":
                self.reset_pending, fault = False, "reset"
            if fault:
                self.injected[fault] += 1
            self.log.append((method, path, fault or "ok"))
            return fault


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that hung up: no traceback
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    proxy: FlakyProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, cut: bool = False) -> None:
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not cut:
            self.wfile.write(body)
            return
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        # SO_LINGER 0: close with a RST, as a dropped connection does
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _error(self, status: int, body: bytes) -> None:
        self._send(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
                            ("Retry-After", "0")], body)

    def _handle(self) -> None:
        try:
            self._proxy()
        except (TimeoutError, ConnectionError):  # the client gave up on this connection (or we cut it)
            self.close_connection = True

    def _proxy(self) -> None:
        proxy = self.proxy
        body = self._body()
        fault = proxy._next_fault(self.command, self.path)
        if fault in ("503", "down"):
            return self._error(503, SLOW_DOWN)
        if fault == "500":
            return self._error(500, INTERNAL)
        if fault == "delay":
            time.sleep(proxy.delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                         headers=headers)
            r = conn.getresponse()
            data = r.read()
            out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        finally:
            conn.close()
        with proxy.lock:
            proxy.body_bytes[self.command] += len(data)
        if self.command != "HEAD" and r.status not in (204, 304):
            out.append(("Content-Length", str(len(data))))
        elif r.getheader("Content-Length") is not None:
            out.append(("Content-Length", r.getheader("Content-Length")))
        if proxy.down_after is not None and proxy.down_after(self.command, self.path):
            proxy.go_down()
        self._send(r.status, out, data, cut=fault == "reset" and len(data) >= 2)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle
