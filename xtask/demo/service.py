#!/usr/bin/env python3
"""A pretend brokerage JSON API on 127.0.0.1 for `cargo xtask demo` (stdlib only).

Prints "listening on http://127.0.0.1:PORT" and "dns on 127.0.0.1:PORT" as its first two lines of
stdout, then serves until killed. Endpoints: GET /v1/accounts, GET /v1/quotes/<SYMBOL>,
POST /v1/orders (JSON body). The DNS responder (UDP) answers A questions for `localhost` and
`brokerage.demo` with 127.0.0.1 and everything else with NXDOMAIN, so the demo needs no network.
"""
import json
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTES = {"ACME": "123.45", "GLOBEX": "42.00", "INITECH": "7.10"}
ORDERS = []


class Brokerage(BaseHTTPRequestHandler):
    server_version = "demo-brokerage/1.0"
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/accounts":
            self.reply(200, {"accounts": [{"id": "ACC-1001", "cash": "10000.00", "currency": "USD"}]})
        elif self.path.startswith("/v1/quotes/"):
            symbol = self.path.rsplit("/", 1)[-1].upper()
            if symbol in QUOTES:
                self.reply(200, {"symbol": symbol, "price": QUOTES[symbol]})
            else:
                self.reply(404, {"error": f"unknown symbol {symbol}"})
        else:
            self.reply(404, {"error": "no such endpoint"})

    def do_POST(self):
        if self.path != "/v1/orders":
            self.reply(404, {"error": "no such endpoint"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            order = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.reply(400, {"error": "body is not JSON"})
            return
        symbol = str(order.get("symbol", "")).upper()
        if symbol not in QUOTES:
            self.reply(422, {"error": f"unknown symbol {symbol}"})
            return
        ORDERS.append(order)
        self.reply(201, {"order_id": f"ORD-{len(ORDERS):04d}", "status": "filled",
                         "symbol": symbol, "qty": order.get("qty", 0), "price": QUOTES[symbol]})

    def log_message(self, fmt, *args):
        sys.stderr.write("service: " + (fmt % args) + "\n")


LOCAL_NAMES = {"localhost", "brokerage.demo"}


def dns_answer(query):
    """The reply to one DNS query packet, or None if it is not one we can parse."""
    if len(query) < 12:
        return None
    qid, _flags, qdcount = struct.unpack(">HHH", query[:6])
    if qdcount != 1:
        return None
    labels, i = [], 12
    while i < len(query) and query[i] != 0:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    question = query[12:i + 5]
    if len(question) < (i + 5) - 12:
        return None
    qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
    name = ".".join(labels)
    known = name in LOCAL_NAMES
    answers = b""
    if known and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    rcode = 0 if known else 3
    header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    sys.stderr.write(f"service: DNS {name} type {qtype} -> {'127.0.0.1' if answers else 'rcode %d' % rcode}\n")
    return header + question + answers


def serve_dns(sock):
    while True:
        query, peer = sock.recvfrom(4096)
        reply = dns_answer(query)
        if reply:
            sock.sendto(reply, peer)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Brokerage)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    threading.Thread(target=serve_dns, args=(dns,), daemon=True).start()
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    print(f"dns on 127.0.0.1:{dns.getsockname()[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
