"""Webhooks checked with the official `pusher` Python SDK.

A local HTTP receiver on loopback gets ferrocast's webhook POSTs; every request is validated with
`Pusher.validate_webhook(key, signature, body)` (pusher 3.3.4: returns the decoded body, or None
when the key, signature or time_ms is wrong), and the events are asserted: channel_occupied,
channel_vacated (only when the last subscriber leaves, after vacate_grace_ms), member_added and
member_removed (only on a user's first / after their last connection).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import T, Server

APP = {"id": "4545", "key": "py-hook-key", "secret": "py-hook-secret", "name": "py-hooks", "enabled": True}
GRACE = 1.0  # the default vacate_grace_ms


class Receiver:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8")
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def hooks():
    rx = Receiver()
    srv = Server([dict(APP, webhooks=[{"url": rx.url}])])
    yield srv, rx
    srv.stop()
    rx.close()


def validated(sdk, rx):
    """Every request validated by the SDK; returns all their events in arrival order."""
    events = []
    for r in rx.snapshot():
        h = r["headers"]
        assert r["path"] == "/hooks"
        assert h.get("Content-Type") == "application/json"
        data = sdk.validate_webhook(key=h.get("X-Pusher-Key"), signature=h.get("X-Pusher-Signature"),
                                    body=r["body"])
        assert data is not None, f"validate_webhook rejected {h} {r['body']}"
        assert data == json.loads(r["body"])
        assert isinstance(data["time_ms"], int)
        events.extend(data["events"])
    return events


def wait_events(sdk, rx, pred, what, timeout=T):
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in validated(sdk, rx) if pred(e)]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {validated(sdk, rx)}")
        time.sleep(0.05)


def named(name, channel, **extra):
    return lambda e: e.get("name") == name and e.get("channel") == channel and all(
        e.get(k) == v for k, v in extra.items())


def marker(srv, sdk, rx, uniq, clients_made):
    """A fresh channel's channel_occupied has arrived: everything emitted before it has been sent."""
    name = uniq("py-marker-")
    c = srv.client()
    clients_made.append(c)
    c.subscribe(name)
    wait_events(sdk, rx, named("channel_occupied", name), "the marker")
    c.close()


@pytest.fixture()
def made():
    cs = []
    yield cs
    for c in cs:
        c.close()


def test_occupied_and_vacated(hooks, uniq, made):
    srv, rx = hooks
    sdk = srv.sdk()
    ch = uniq("py-hook-")
    a, b = srv.client(), srv.client()
    made += [a, b]
    a.subscribe(ch)
    [occ] = wait_events(sdk, rx, named("channel_occupied", ch), "channel_occupied")
    assert occ == {"name": "channel_occupied", "channel": ch}
    b.subscribe(ch)
    wait_events(sdk, rx, named("subscription_count", ch, subscription_count=2), "subscription_count 2")

    a.send("pusher:unsubscribe", {"channel": ch})
    wait_events(sdk, rx, named("subscription_count", ch, subscription_count=1), "subscription_count 1")
    time.sleep(GRACE + 0.5)
    marker(srv, sdk, rx, uniq, made)
    events = validated(sdk, rx)
    assert [e for e in events if named("channel_vacated", ch)(e)] == [], "b still subscribed"
    assert len([e for e in events if named("channel_occupied", ch)(e)]) == 1

    b.close()
    [vac] = wait_events(sdk, rx, named("channel_vacated", ch), "channel_vacated after the last subscriber left")
    assert vac == {"name": "channel_vacated", "channel": ch}


def test_member_added_and_removed(hooks, uniq, made):
    srv, rx = hooks
    sdk = srv.sdk()
    ch = uniq("presence-py-hook-")

    def join(uid):
        c = srv.client()
        made.append(c)
        auth = sdk.authenticate(ch, c.socket_id, {"user_id": uid, "user_info": {"name": uid}})
        c.subscribe(ch, auth["auth"], auth["channel_data"])
        return c

    u1a = join("py-u1")
    [added] = wait_events(sdk, rx, named("member_added", ch, user_id="py-u1"), "member_added py-u1")
    assert added == {"name": "member_added", "channel": ch, "user_id": "py-u1"}
    u1b = join("py-u1")
    join("py-u2")
    wait_events(sdk, rx, named("member_added", ch, user_id="py-u2"), "member_added py-u2")
    time.sleep(0.3)
    marker(srv, sdk, rx, uniq, made)
    events = validated(sdk, rx)
    assert len([e for e in events if named("member_added", ch, user_id="py-u1")(e)]) == 1, \
        "a second connection of py-u1 is no new member"
    assert len([e for e in events if named("channel_occupied", ch)(e)]) == 1

    u1a.close()
    time.sleep(GRACE + 0.5)
    marker(srv, sdk, rx, uniq, made)
    assert [e for e in validated(sdk, rx) if named("member_removed", ch)(e)] == [], \
        "py-u1 is still present through its other connection"

    u1b.close()
    [removed] = wait_events(sdk, rx, named("member_removed", ch, user_id="py-u1"), "member_removed py-u1")
    assert removed == {"name": "member_removed", "channel": ch, "user_id": "py-u1"}


def test_validate_webhook_rejects_tampering(hooks, uniq, made):
    """The same SDK call refuses a changed body, another signature or another key."""
    srv, rx = hooks
    sdk = srv.sdk()
    ch = uniq("py-hook-tamper-")
    c = srv.client()
    made.append(c)
    c.subscribe(ch)
    wait_events(sdk, rx, named("channel_occupied", ch), "channel_occupied")
    r = next(r for r in rx.snapshot() if ch in r["body"])
    key, sig, body = r["headers"]["X-Pusher-Key"], r["headers"]["X-Pusher-Signature"], r["body"]
    assert sdk.validate_webhook(key=key, signature=sig, body=body) is not None
    assert sdk.validate_webhook(key=key, signature=sig, body=body.replace(ch, ch + "x")) is None
    assert sdk.validate_webhook(key=key, signature="0" * 64, body=body) is None
    assert sdk.validate_webhook(key="other-key", signature=sig, body=body) is None
