"""Fixtures for the Python SDK tests: a real ferrocast server and plain WebSocket Pusher clients.

The server is `ferrocast websocket --port 0 --fifo DIR/b.fifo --config DIR/config.json`
(binary from FERROCAST_BIN, default ../../target/debug/ferrocast); its port comes from the
`listening on ws://HOST:PORT/` log line. stderr keeps being drained by a thread.
"""

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pusher
import pytest
import websocket

HERE = Path(__file__).resolve().parent
T = 15.0  # deadline for anything that should happen "soon"

# The Python SDK only accepts numeric app ids.
APP = {
    "id": "4242",
    "key": "py-key",
    "secret": "py-secret",
    "name": "python-tests",
    "enabled": True,
}


def bin_path():
    env = os.environ.get("FERROCAST_BIN")
    if env:
        return Path(env).resolve()
    return (HERE / "../../target/debug/ferrocast").resolve()


class Server:
    def __init__(self, apps):
        self.apps = apps
        self.dir = tempfile.TemporaryDirectory(prefix="ferrocast-py-")
        d = Path(self.dir.name)
        self.fifo = d / "b.fifo"
        cfg = d / "config.json"
        cfg.write_text(json.dumps({"apps": apps}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERROCAST_")}
        env.update(RUNTIME_DIRECTORY=str(d), XDG_RUNTIME_DIR=str(d), RUST_LOG="ferrocast=debug")
        # The suite runs once with one loop and once with two (tests/run.sh).
        if os.environ.get("FERROCAST_TEST_LOOPS"):
            env["FERROCAST_LOOPS"] = os.environ["FERROCAST_TEST_LOOPS"]
        binary = bin_path()
        if not binary.exists():
            raise RuntimeError(f"ferrocast binary not found at {binary} (cargo build or FERROCAST_BIN)")
        self.proc = subprocess.Popen(
            [str(binary), "websocket", "--port", "0", "--fifo", str(self.fifo), "--config", str(cfg)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.logs = []
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        line = self.wait_log(lambda l: re.search(r"listening on wss?://[^\s/]+:(\d+)", l), 20.0)
        if not line:
            self.stop()
            raise RuntimeError("server did not log its port; stderr:\n" + "\n".join(self.logs))
        self.port = int(re.search(r"listening on wss?://[^\s/]+:(\d+)", line).group(1))

    def _drain(self):
        for raw in self.proc.stderr:
            line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._cond:
                self.logs.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_log(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for l in self.logs:
                    if pred(l):
                        return l
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(left)

    def sdk(self, app=None, **overrides):
        app = app or self.apps[0]
        kw = dict(app_id=app["id"], key=app["key"], secret=app["secret"], ssl=False,
                  host="127.0.0.1", port=self.port, timeout=10)
        kw.update(overrides)
        return pusher.Pusher(**kw)

    def client(self, key=None):
        return PusherWs(self.port, key or self.apps[0]["key"])

    def fifo_write(self, obj):
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (json.dumps(obj) + "\n").encode())
        finally:
            os.close(fd)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.dir.cleanup()


class PusherWs:
    """A minimal Pusher protocol 7 client over websocket-client."""

    def __init__(self, port, key):
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/app/{key}?protocol=7&client=python-test&version=1.0", timeout=T)
        self.pending = []
        self.close_code = None
        first = self.next_frame(T)
        assert first["event"] == "pusher:connection_established", first
        self.socket_id = json.loads(first["data"])["socket_id"]

    def send(self, event, data, channel=None):
        msg = {"event": event, "data": data}
        if channel is not None:
            msg["channel"] = channel
        self.ws.send(json.dumps(msg))

    def _read(self, timeout):
        self.ws.settimeout(max(timeout, 0.01))
        try:
            opcode, payload = self.ws.recv_data(control_frame=False)
        except websocket.WebSocketTimeoutException:
            return None
        except websocket.WebSocketConnectionClosedException:
            return {"closed": True, "code": self.close_code}
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            return {"closed": True, "code": self.close_code}
        return json.loads(payload.decode())

    def next_frame(self, timeout=T):
        if self.pending:
            return self.pending.pop(0)
        frame = self._read(timeout)
        if frame is None:
            raise AssertionError(f"no frame within {timeout} s")
        return frame

    def wait_for(self, pred, what, timeout=T):
        """Returns the first frame matching pred; other frames are kept for later waits."""
        deadline = time.monotonic() + timeout
        for i, f in enumerate(self.pending):
            if pred(f):
                return self.pending.pop(i)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; kept: {self.pending}")
            f = self._read(left)
            if f is None:
                continue
            if pred(f):
                return f
            if f.get("closed"):
                raise AssertionError(f"connection closed ({f['code']}) while waiting for {what}")
            self.pending.append(f)

    def event(self, channel, name, timeout=T):
        return self.wait_for(lambda f: f.get("channel") == channel and f.get("event") == name,
                             f"{name} on {channel}", timeout)

    def subscribe(self, channel, auth=None, channel_data=None):
        data = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send("pusher:subscribe", data)
        f = self.wait_for(
            lambda f: f.get("channel") == channel and f.get("event") in (
                "pusher_internal:subscription_succeeded", "pusher:subscription_error"),
            f"subscription answer for {channel}")
        assert f["event"] == "pusher_internal:subscription_succeeded", f
        return f

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


EMPTY_APP = {"id": "4343", "key": "py-empty-key", "secret": "py-empty-secret", "name": "empty"}


@pytest.fixture(scope="module")
def server():
    s = Server([dict(APP), dict(EMPTY_APP)])
    yield s
    s.stop()


@pytest.fixture()
def sdk(server):
    return server.sdk()


@pytest.fixture()
def clients(server):
    made = []

    def make():
        c = server.client()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


_seq = [0]


@pytest.fixture()
def uniq():
    def make(prefix):
        _seq[0] += 1
        return f"{prefix}{os.getpid()}-{_seq[0]}"
    return make
