#!/usr/bin/env python3
"""A sample "agent" for `cargo xtask demo`: looks names up and calls the brokerage API.

It knows nothing about harness: no proxy settings, no configuration. Run it enclosed with
`harness run -- python3 agent.py URL`, and every connection it makes lands in the ledger.
Exit status: 0 when every API call succeeded.
"""
import json
import random
import socket
import struct
import sys
import urllib.request

# No proxy from the environment: the point is that harness needs none.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", "User-Agent": "demo-agent/1.0"})
    with OPENER.open(req, timeout=10) as resp:
        answer = json.loads(resp.read())
        print(f"agent: {method} {url} -> {resp.status} {json.dumps(answer)}", flush=True)
        return answer


def dns_query(name):
    """One DNS A query over UDP to the first nameserver in /etc/resolv.conf (port 53).

    Enclosed, it goes to harness's resolver whatever the address; `cargo xtask demo` points
    that resolver at the demo service's own DNS responder.
    """
    server = "127.0.0.53"
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    server = parts[1]
                    break
    except OSError:
        pass
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(packet, (server, 53))
        reply, _ = s.recvfrom(4096)
    rcode = reply[3] & 0x0F
    answers = struct.unpack(">H", reply[6:8])[0]
    # With one question and compressed answer names, an A record's address is the last 4 bytes.
    address = socket.inet_ntoa(reply[-4:]) if answers and len(reply) >= 16 else None
    return server, rcode, answers, address


def main():
    base = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    addrs = sorted({info[4][0] for info in socket.getaddrinfo("localhost", None, proto=socket.IPPROTO_TCP)})
    print(f"agent: getaddrinfo(localhost) -> {', '.join(addrs)}", flush=True)
    try:
        server, rcode, answers, address = dns_query("brokerage.demo")
        print(f"agent: DNS query brokerage.demo. A via {server}:53 -> rcode {rcode}, "
              f"{answers} answer(s){' ' + address if address else ''}", flush=True)
    except OSError as e:
        print(f"agent: DNS query localhost. A failed: {e}", flush=True)

    ok = True
    try:
        call("GET", f"{base}/v1/accounts")
        quote = call("GET", f"{base}/v1/quotes/ACME")
        order = call("POST", f"{base}/v1/orders", {"symbol": "ACME", "qty": 10, "limit": quote["price"]})
        print(f"agent: done, order {order['order_id']} {order['status']}", flush=True)
    except Exception as e:  # the demo reports any failure and exits non-zero
        print(f"agent: API call failed: {e}", flush=True)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
