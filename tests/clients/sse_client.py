#!/usr/bin/env python3
"""Reads a Switchboard receive stream with a third-party SSE client library
and prints each event it yields as one JSON line on stdout:
{"event": ..., "data": ..., "id": ..., "retry": ...}. Exits after COUNT
events, or when the stream ends (then prints {"end": true}).

Usage: sse_client.py LIBRARY URL TOKEN COUNT
LIBRARY: httpx-sse (httpx + httpx-sse) or sseclient (requests + sseclient-py),
both with their default settings.
"""
import json
import sys


def emit(event, data, id_, retry):
    print(json.dumps({"event": event, "data": data, "id": id_, "retry": retry}), flush=True)


def with_httpx_sse(url, headers, count):
    import httpx
    from httpx_sse import connect_sse

    with httpx.Client(timeout=httpx.Timeout(30.0)) as client:
        with connect_sse(client, "GET", url, headers=headers) as source:
            n = 0
            for sse in source.iter_sse():
                emit(sse.event, sse.data, sse.id, sse.retry)
                n += 1
                if n >= count:
                    return n
            return n


def with_sseclient(url, headers, count):
    import requests
    import sseclient

    response = requests.get(url, stream=True, headers=headers, timeout=30)
    client = sseclient.SSEClient(response)
    n = 0
    for event in client.events():
        emit(event.event, event.data, event.id or None, event.retry)
        n += 1
        if n >= count:
            return n
    return n


def main():
    library, url, token, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    headers = {"Authorization": "Bearer " + token, "Accept": "text/event-stream"}
    if library == "httpx-sse":
        n = with_httpx_sse(url, headers, count)
    elif library == "sseclient":
        n = with_sseclient(url, headers, count)
    else:
        sys.exit("unknown library " + library)
    if n < count:
        print(json.dumps({"end": True}), flush=True)


if __name__ == "__main__":
    main()
