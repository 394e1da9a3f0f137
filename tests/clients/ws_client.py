#!/usr/bin/env python3
"""Drives a Switchboard WebSocket connection with the third-party Python
library `websockets` (asyncio client, default settings apart from the
subprotocol and no proxy), for tests/websocket/python.rs.

Usage: ws_client.py URL

Prints one JSON line per thing that happens on stdout:
  {"open": true, "subprotocol": ...}   after the handshake
  {"recv": EVENT}                      each message received (parsed JSON)
  {"pong": DATA}                       the Pong to a ping op arrived
  {"closed": CODE, "reason": REASON}   the connection ended (CODE as the library saw it)
  {"failed": TEXT}                     the handshake or an op failed
Reads one JSON op per line on stdin:
  {"op": "send", "cmd": {...}}         one text message
  {"op": "fragments", "parts": [...]}  one text message sent in fragments (an iterator of str)
  {"op": "ping", "data": "..."}        a Ping; waits for its Pong
  {"op": "close"}                      the closing handshake (1000)
  {"op": "cut"}                        drops the TCP connection without a Close
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def out(obj):
    print(json.dumps(obj), flush=True)


async def run(url):
    try:
        ws = await connect(url, subprotocols=["switchboard.v1"], proxy=None)
    except Exception as e:  # the refusal, as the library reports it
        out({"failed": repr(e)})
        return
    out({"open": True, "subprotocol": ws.subprotocol})

    async def reader():
        try:
            async for msg in ws:
                out({"recv": json.loads(msg)})
        except ConnectionClosed:
            pass
        out({"closed": ws.close_code, "reason": ws.close_reason})

    task = asyncio.create_task(reader())
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        op = json.loads(line)
        try:
            if op["op"] == "send":
                await ws.send(json.dumps(op["cmd"]))
            elif op["op"] == "fragments":
                await ws.send(iter(op["parts"]))
            elif op["op"] == "ping":
                waiter = await ws.ping(op["data"])
                await asyncio.wait_for(waiter, 10)
                out({"pong": op["data"]})
            elif op["op"] == "close":
                await ws.close()
            elif op["op"] == "cut":
                ws.transport.abort()
        except Exception as e:
            out({"failed": op["op"] + ": " + repr(e)})
    await task


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
