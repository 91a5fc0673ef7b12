"""The official `pusher` Python SDK against a real ferrocast server.

Every test checks what a subscriber (a plain WebSocket speaking Pusher protocol 7) received or
what the server reports, not just the HTTP status.
"""

import json

import pytest
from pusher.errors import PusherBadRequest, PusherBadAuth, PusherError


def test_trigger_reaches_subscriber(server, sdk, clients, uniq):
    ch = uniq("py-orders-")
    c = clients()
    c.subscribe(ch)
    assert sdk.trigger(ch, "created", {"id": 1, "name": "tea"}) == {}
    f = c.event(ch, "created")
    assert isinstance(f["data"], str), "published data travels as a JSON string"
    assert json.loads(f["data"]) == {"id": 1, "name": "tea"}


def test_trigger_string_data_verbatim(server, sdk, clients, uniq):
    ch = uniq("py-text-")
    c = clients()
    c.subscribe(ch)
    sdk.trigger(ch, "note", "plain words")
    assert c.event(ch, "note")["data"] == "plain words"


def test_trigger_several_channels(server, sdk, clients, uniq):
    names = [uniq("py-multi-") for _ in range(3)]
    subs = []
    for n in names:
        c = clients()
        c.subscribe(n)
        subs.append(c)
    sdk.trigger(names, "fanout", {"n": 3})
    for n, c in zip(names, subs):
        f = c.event(n, "fanout")
        assert json.loads(f["data"]) == {"n": 3}
    # One delivery per channel: the next thing each subscriber gets is the marker.
    sdk.trigger(names, "marker", {})
    for n, c in zip(names, subs):
        f = c.wait_for(lambda f: f.get("event") in ("fanout", "marker"), "marker")
        assert f["event"] == "marker"


def test_trigger_socket_id_excludes_sender(server, sdk, clients, uniq):
    ch = uniq("py-excl-")
    a, b = clients(), clients()
    a.subscribe(ch)
    b.subscribe(ch)
    sdk.trigger(ch, "e", "x", socket_id=a.socket_id)
    b.event(ch, "e")
    sdk.trigger(ch, "marker", "m")
    f = a.wait_for(lambda f: f.get("event") in ("e", "marker"), "marker on a")
    assert f["event"] == "marker", "the excluded socket must not get the event"


def test_trigger_batch(server, sdk, clients, uniq):
    n1, n2 = uniq("py-batch-"), uniq("py-batch-")
    a, b = clients(), clients()
    a.subscribe(n1)
    b.subscribe(n2)
    assert sdk.trigger_batch([
        {"channel": n1, "name": "one", "data": {"i": 1}},
        {"channel": n2, "name": "two", "data": {"i": 2}},
        {"channel": n1, "name": "three", "data": "3"},
    ]) == {}
    assert json.loads(a.event(n1, "one")["data"]) == {"i": 1}
    assert a.event(n1, "three")["data"] == "3"
    assert json.loads(b.event(n2, "two")["data"]) == {"i": 2}


def test_trigger_batch_over_ten_is_rejected(server, sdk, clients, uniq):
    ch = uniq("py-bigbatch-")
    c = clients()
    c.subscribe(ch)
    with pytest.raises(PusherBadRequest):
        sdk.trigger_batch([{"channel": ch, "name": "e", "data": str(i)} for i in range(11)])
    sdk.trigger(ch, "marker", "m")
    f = c.wait_for(lambda f: f.get("event") in ("e", "marker"), "marker")
    assert f["event"] == "marker", "nothing of a refused batch is delivered"


def test_channels_info(server, sdk, clients, uniq):
    pub = uniq("py-list-")
    pres = uniq("presence-py-list-")
    a, b = clients(), clients()
    a.subscribe(pub)
    for c, uid in ((a, "ua"), (b, "ub")):
        auth = sdk.authenticate(pres, c.socket_id, {"user_id": uid, "user_info": {"name": uid}})
        c.subscribe(pres, auth["auth"], auth["channel_data"])
    everything = sdk.channels_info()
    assert pub in everything["channels"] and pres in everything["channels"]
    assert everything["channels"][pub] == {}
    presence = sdk.channels_info(prefix_filter="presence-py-list-", attributes=["user_count"])
    assert presence["channels"][pres] == {"user_count": 2}
    assert pub not in presence["channels"]


def test_channels_info_empty_is_object(server):
    # A second app that never has a channel: the map renders as {} (never []).
    other = server.sdk(server.apps[1])
    assert other.channels_info() == {"channels": {}}
    assert server.sdk().channels_info(prefix_filter="nothing-here-") == {"channels": {}}


def test_channel_info_subscription_count(server, sdk, clients, uniq):
    ch = uniq("py-count-")
    assert sdk.channel_info(ch, ["subscription_count"]) == {"occupied": False, "subscription_count": 0}
    subs = [clients() for _ in range(3)]
    for c in subs:
        c.subscribe(ch)
    assert sdk.channel_info(ch, ["subscription_count"]) == {"occupied": True, "subscription_count": 3}
    assert sdk.channel_info(ch) == {"occupied": True}


def test_channel_info_user_count_only_for_presence(server, sdk):
    with pytest.raises(PusherBadRequest):
        sdk.channel_info("not-presence", ["user_count"])


def test_users_info_on_presence_channel(server, sdk, clients, uniq):
    pres = uniq("presence-py-users-")
    a, b, a2 = clients(), clients(), clients()
    for c, uid in ((a, "alice"), (b, 42), (a2, "alice")):
        auth = sdk.authenticate(pres, c.socket_id, {"user_id": uid, "user_info": {"n": str(uid)}})
        sub = c.subscribe(pres, auth["auth"], auth["channel_data"])
        presence = json.loads(sub["data"])["presence"]
        assert set(presence) == {"ids", "hash", "count"}
    users = sdk.users_info(pres)
    assert sorted(u["id"] for u in users["users"]) == ["42", "alice"]
    # alice's first connection saw bob join once (one member_added per user).
    added = a.event(pres, "pusher_internal:member_added")
    assert json.loads(added["data"])["user_id"] == "42"
    with pytest.raises(PusherBadRequest):
        sdk.users_info(uniq("py-public-"))


def test_authenticate_then_private_channel_receives(server, sdk, clients, uniq):
    ch = uniq("private-py-")
    c = clients()
    auth = sdk.authenticate(ch, c.socket_id)
    c.subscribe(ch, auth["auth"])
    sdk.trigger(ch, "secret", {"s": 1})
    assert json.loads(c.event(ch, "secret")["data"]) == {"s": 1}


def test_wrong_secret_is_refused(server, clients, uniq):
    bad = server.sdk(secret="not-the-secret")
    with pytest.raises(PusherBadAuth):
        bad.trigger(uniq("py-x-"), "e", "d")


def test_send_to_user(server, sdk, clients):
    c = clients()
    signin = sdk.authenticate_user(c.socket_id, {"id": "py-user"})
    c.send("pusher:signin", signin)
    ok = c.wait_for(lambda f: f.get("event") == "pusher:signin_success", "signin_success")
    assert json.loads(ok["data"]["user_data"])["id"] == "py-user"
    c.subscribe("#server-to-user-py-user")
    sdk.send_to_user("py-user", "hello", {"to": "you"})
    f = c.event("#server-to-user-py-user", "hello")
    assert json.loads(f["data"]) == {"to": "you"}


def _signed_in(clients, sdk, uid):
    c = clients()
    c.send("pusher:signin", sdk.authenticate_user(c.socket_id, {"id": uid}))
    c.wait_for(lambda f: f.get("event") == "pusher:signin_success", f"signin_success for {uid}")
    return c


def _assert_terminated(sdk, victim, bystander, uniq):
    err = victim.wait_for(lambda f: f.get("event") == "pusher:error" or f.get("closed"), "pusher:error 4009")
    assert err.get("data", {}).get("code") == 4009, err
    closed = victim.wait_for(lambda f: f.get("closed"), "close frame")
    assert closed["code"] == 4009
    # The other user is untouched.
    ch = uniq("py-after-")
    bystander.subscribe(ch)
    sdk.trigger(ch, "still", "here")
    assert bystander.event(ch, "still")["data"] == "here"


def test_terminate_user_connections(server, sdk, clients, uniq):
    """POST /apps/{app_id}/users/{user_id}/terminate_connections, signed by the SDK's own
    request signer (see the next test for why not sdk.terminate_user_connections)."""
    from pusher.http import POST, Request
    victim = _signed_in(clients, sdk, "py-doomed")
    bystander = _signed_in(clients, sdk, "py-fine")
    client = sdk._pusher_client
    req = Request(client, POST, "/apps/%s/users/%s/terminate_connections" % (client.app_id, "py-doomed"), {})
    assert client.http.send_request(req) == {}
    _assert_terminated(sdk, victim, bystander, uniq)


# pusher 3.3.4's terminate_user_connections posts to /users/{id}/terminate_connections, without
# the /apps/{app_id} prefix the HTTP API documents; ferrocast accepts that path too.
def test_terminate_user_connections_sdk_method(server, sdk, clients, uniq):
    victim = _signed_in(clients, sdk, "py-doomed-2")
    bystander = _signed_in(clients, sdk, "py-fine-2")
    sdk.terminate_user_connections("py-doomed-2")
    _assert_terminated(sdk, victim, bystander, uniq)


def test_fifo_line_reaches_subscriber(server, clients, uniq):
    ch = uniq("py-fifo-")
    c = clients()
    c.subscribe(ch)
    server.fifo_write({"channel": ch, "event": "from-fifo", "data": "{\"k\":1}"})
    f = c.event(ch, "from-fifo")
    assert json.loads(f["data"]) == {"k": 1}
