"""permessage-deflate with the Python `websockets` client (compression on by default): the
handshake's agreement, compressed messages both ways (the client complies with
client_no_context_takeover, so repeated messages inflate on their own), a 2 KB event intact."""
import json

from websockets.sync.client import connect

AGREED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def order_event(n):
    items = [{"id": i, "sku": f"SKU-{i:05}", "name": "Blue T-shirt", "qty": 1} for i in range(20)]
    return json.dumps({"event": "App\\Events\\OrderShipped", "order": {"id": n, "items": items}})


def test_websockets_client_negotiates_and_gets_events_intact(server):
    url = f"ws://127.0.0.1:{server.port}/ws"
    with connect(url, open_timeout=15, close_timeout=5) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == AGREED
        # Long enough that the client compresses it; sent twice, each inflates on its own.
        subscribe = json.dumps({"action": "subscribe", "channel": "py-deflate", "pad": "x" * 400})
        for _ in range(2):
            ws.send(subscribe)
            reply = json.loads(ws.recv(timeout=15))
            assert reply["event"] == "subscribed", reply
        data = order_event(7)
        server.fifo_write({"channel": "py-deflate", "data": data})
        assert ws.recv(timeout=15) == data
