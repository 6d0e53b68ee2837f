#!/usr/bin/env python3
"""A tiny DNS responder on loopback for `cargo xtask demo` (stdlib only).

    dns.py NAME=ADDR [NAME=ADDR ...]

Answers A questions for the given names with their IPv4 addresses, other question types for
those names with an empty NOERROR answer (so resolvers fall back to the A record), and every
other name with NXDOMAIN. Prints "dns on 127.0.0.1:PORT" as its first line of stdout, then serves
until killed. `cargo xtask demo` hands that address to `harness run --dns-upstream`, so the
enclosed agent's lookups of the demo's names (api.anthropic.com included) never leave the machine.
It stays on the host's loopback because harness's resolver, which forwards to it, runs in the
host's network namespace; the addresses it answers are the demo's world (198.18.<k>.x, a
network namespace over a veth) for the model and the brokerage, and the enclosure's own
loopback for the MCP server the agent starts inside it.
"""
import socket
import struct
import sys


def dns_answer(query, names):
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
    if i + 5 > len(query):
        return None
    question = query[12:i + 5]
    qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
    name = ".".join(labels)
    address = names.get(name)
    answers = b""
    if address and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    rcode = 0 if address else 3
    # Echo the client's RD bit; answer authoritatively with RA set.
    flags = 0x8480 | (struct.unpack(">H", query[2:4])[0] & 0x0100) | rcode
    header = struct.pack(">HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def main():
    names = {}
    for arg in sys.argv[1:]:
        name, _, address = arg.partition("=")
        socket.inet_aton(address)  # refuses anything but an IPv4 address
        names[name.lower().rstrip(".")] = address
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(f"dns on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    while True:
        query, peer = sock.recvfrom(4096)
        reply = dns_answer(query, names)
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
