#!/usr/bin/env python3
"""The sample agent `cargo xtask demo` encloses: a model, an MCP tool server, a brokerage.

    agent.py --peers PATH [--prompt TEXT] [--mcp-listen ADDR] [--mcp-url URL] [--broker-url URL]

1. Starts its MCP tool server as a child process (the project's `peers` binary, serving MCP over
   Streamable HTTP on loopback: inside the enclosure, like the agent); the server's
   `place_order` tool calls the brokerage API over HTTPS (outside, at whatever address
   broker.demo resolves to: in the demo, a host of its test network namespace).
2. MCP: `initialize`, `notifications/initialized`, `tools/list`.
3. Asks the model (the official Anthropic Python SDK, at https://api.anthropic.com) to act on
   the prompt with those tools; the model answers with a `tool_use` for `place_order`.
4. MCP: `tools/call place_order` with the model's arguments; the tool server places the order
   with the brokerage.
5. Sends the tool result back to the model and prints its final answer.

It knows nothing about harness: no proxy, no CA flags, no base URL override. Enclosed by
`harness run`, every connection it and its tool server make is redirected, recorded and, for
TLS, terminated by harness with a CA the enclosure trusts (SSL_CERT_FILE, and the system bundle
paths bind-mounted). Exit status 0 when the whole exchange succeeded.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import http.client
import urllib.parse

import anthropic

MODEL = "claude-sonnet-4-6"


def say(text):
    print(f"agent: {text}", flush=True)


class Mcp:
    """A minimal MCP client over Streamable HTTP (JSON-RPC 2.0 in POST bodies)."""

    def __init__(self, url):
        self.url = url
        parts = urllib.parse.urlsplit(url)
        # One keep-alive connection, no proxy from the environment: harness needs none.
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        self.path = parts.path or "/"
        self.session = None
        self.version = None
        self.next_id = 1

    def post(self, message):
        headers = {"Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream",
                   "User-Agent": "demo-agent/1.0"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        if self.version:
            headers["MCP-Protocol-Version"] = self.version
        self.conn.request("POST", self.path, body=json.dumps(message).encode(), headers=headers)
        resp = self.conn.getresponse()
        body = resp.read().decode()
        if resp.status >= 300:
            raise RuntimeError(f"MCP {message['method']}: HTTP {resp.status} {body}")
        self.session = resp.headers.get("Mcp-Session-Id") or self.session
        kind = resp.headers.get("Content-Type", "")
        if "id" not in message:
            return None  # a notification: 202, no body
        if kind.startswith("text/event-stream"):
            messages = []
            for event in body.replace("\r\n", "\n").split("\n\n"):
                data = "\n".join(l[5:].lstrip() for l in event.split("\n") if l.startswith("data:"))
                if data:
                    messages.append(json.loads(data))
        else:
            messages = [json.loads(body)]
        for m in messages:
            if m.get("id") == message["id"]:
                if "error" in m:
                    raise RuntimeError(f"MCP {message['method']} failed: {m['error']}")
                return m["result"]
        raise RuntimeError(f"MCP {message['method']}: no response in {body!r}")

    def request(self, method, params):
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.next_id += 1
        return self.post(message)

    def notify(self, method):
        self.post({"jsonrpc": "2.0", "method": method})


def start_tool_server(args):
    """Starts the MCP server (peers) and waits for its ready line; returns (process, info)."""
    ca_dir = tempfile.mkdtemp(prefix="demo-mcp-ca-")
    cmd = [args.peers, "--ca-dir", ca_dir, "--listen", args.mcp_listen, "--name", "mcp.demo",
           "--plaintext", "--broker-url", args.broker_url]
    # The tool server's own HTTPS calls trust what the enclosure trusts.
    if os.environ.get("SSL_CERT_FILE"):
        cmd += ["--trust", os.environ["SSL_CERT_FILE"]]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    if not line:
        server.wait()
        raise RuntimeError(f"the MCP tool server exited ({server.returncode}) before it was ready")
    return server, json.loads(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peers", required=True, help="the peers binary (the MCP tool server)")
    p.add_argument("--prompt", default="Buy 10 ACME")
    p.add_argument("--mcp-listen", default="127.0.0.3:8443")
    p.add_argument("--mcp-url", default="http://mcp.demo:8443/mcp")
    p.add_argument("--broker-url", default="https://broker.demo")
    args = p.parse_args()

    trust = os.environ.get("SSL_CERT_FILE")
    say(f"pid {os.getpid()}, uid {os.getuid()}; TLS roots from "
        f"{'SSL_CERT_FILE=' + trust if trust else 'the system bundle'} (set by harness, not by me)")

    server, info = start_tool_server(args)
    try:
        say(f"started the MCP tool server, pid {server.pid}, on {info['peers'][0]['addr']} "
            f"(its tools call {args.broker_url})")
        mcp = Mcp(args.mcp_url)
        init = mcp.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "harness-demo-agent", "version": "1.0"}})
        mcp.version = init["protocolVersion"]
        mcp.notify("notifications/initialized")
        tools = mcp.request("tools/list", {})["tools"]
        say(f"MCP {args.mcp_url}: {init['serverInfo']['name']}, "
            f"tools: {', '.join(t['name'] for t in tools)}")

        client = anthropic.Anthropic(base_url="https://api.anthropic.com",
                                     api_key="sk-ant-demo-0000-not-a-real-key", max_retries=0)
        offered = [{"name": t["name"], "description": t.get("description", ""),
                    "input_schema": t["inputSchema"]} for t in tools]
        messages = [{"role": "user", "content": args.prompt}]
        say(f"user: {args.prompt}")
        # First turn streamed (SSE), as agents usually do.
        with client.messages.stream(model=MODEL, max_tokens=1024, messages=messages, tools=offered,
                                    thinking={"type": "enabled", "budget_tokens": 512}) as stream:
            first = stream.get_final_message()
        for block in first.content:
            if block.type == "thinking":
                say(f"model thinks: {block.thinking}")
            elif block.type == "text":
                say(f"model says: {block.text}")
            elif block.type == "tool_use":
                say(f"model calls: {block.name}({json.dumps(block.input)}) [{block.id}]")
        calls = [b for b in first.content if b.type == "tool_use"]
        if not calls:
            raise RuntimeError(f"the model made no tool call (stop_reason {first.stop_reason})")

        results = []
        for call in calls:
            result = mcp.request("tools/call", {"name": call.name, "arguments": call.input})
            text = "\n".join(c.get("text", "") for c in result.get("content", []))
            say(f"tool {call.name} -> {'ERROR ' if result.get('isError') else ''}{text}")
            if result.get("isError"):
                raise RuntimeError(f"the tool {call.name} failed: {text}")
            results.append({"type": "tool_result", "tool_use_id": call.id,
                            "content": [{"type": "text", "text": text}]})

        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": results}]
        # Second turn buffered (plain JSON).
        final = client.messages.create(model=MODEL, max_tokens=1024, messages=messages,
                                       tools=offered,
                                       thinking={"type": "enabled", "budget_tokens": 512})
        answer = " ".join(b.text for b in final.content if b.type == "text")
        say(f"model answers: {answer}")
        say(f"tokens: {first.usage.input_tokens + final.usage.input_tokens} in, "
            f"{first.usage.output_tokens + final.usage.output_tokens} out")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the demo reports any failure and exits non-zero
        say(f"FAILED: {type(e).__name__}: {e}")
        sys.exit(1)
