"""CurveZMQ on every collector socket: the stack's keys, and the gatekeeper that refuses strangers and counts them.

A key directory (SOCKLAB_KEYS) is made by the collector at its first start (make_keys), in a volume only
the stack's members mount, never committed:
  server.key, server.key_secret   the collector's pair; clients need server.key
  client.key, client.key_secret   the stack members' pair (every container of the compose project)
  authorized/NAME.key             the public keys the collector accepts (member, host, any you add)
  host/                           a client directory for host-side commands (server.key and the host's pair)
A client directory is any directory holding server.key and client.key_secret: a member reads the volume,
the host a copy of host/ (shared.stack, `socklab keys`). secure_server and secure_client are the one line
each socket's creation site calls. A handshake the collector refuses is counted by reason (refusals()):
  no-key            no key presented: ZeroMQ without CurveZMQ (ZMTP's mechanism mismatch), or a connection
                    closed before its handshake ended (a port scan; a plain peer that hung up first)
  wrong-server-key  CurveZMQ whose HELLO the collector cannot open: the peer holds another server's key
  malformed         a CurveZMQ command or ZAP request that does not parse (the log line says which error)
  unknown-key       CurveZMQ with a public key not in authorized/ (the ZAP handler's refusal, with its address)
Bytes that are not ZMTP at all (`nc` typing text) make libzmq close the connection with no handshake
event, so they are not counted: nothing was refused that claimed to be a reporter.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.utils.monitor import parse_monitor_message

from shared.config import load_config

log = logging.getLogger(__name__)

SERVER = "server"
CLIENT = "client"
MEMBER = "member"
HOST = "host"
AUTHORIZED = "authorized"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "socklab"
ZAP_VERSION = b"1.0"
NO_KEY, UNKNOWN_KEY = "no-key", "unknown-key"
WRONG_SERVER_KEY, MALFORMED = "wrong-server-key", "malformed"
WATCHED_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
CURVE_MESSAGE_OVERHEAD = 33  # a CurveZMQ MESSAGE's bytes beyond its payload (RFC 26: name 8, nonce 8, flags 1, MAC 16)
KEY_WAIT = 20.0  # the collector makes the keys as it starts; members starting beside it wait this long

_refused: Counter[str] = Counter()
_refused_lock = threading.Lock()
_gatekeepers: dict[int, Gatekeeper] = {}
_gatekeepers_lock = threading.Lock()
_monitor_ids = itertools.count()


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs: the collector's public key and its own pair (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes


def keys_dir() -> Path:
    """The key directory this process was configured with (SOCKLAB_KEYS)."""
    return Path(load_config("curve").keys)


def make_keys(directory: Path) -> bool:
    """Make the stack's keys unless they are there; False when they were. Atomic: readers see all or nothing."""
    if (directory / f"{CLIENT}.key_secret").exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    # Readable by every user in a member's container (socklab, or the router's root without capabilities):
    # the boundary is the volume, which only the stack's containers mount.
    umask = os.umask(0o022)
    try:
        write_keys(Path(tempfile.mkdtemp(prefix=".new-", dir=directory)), directory)
    finally:
        os.umask(umask)
    log.info("made the stack's CurveZMQ keys in %s", directory)
    return True


def write_keys(new: Path, directory: Path) -> None:
    """Make every key in `new`, then move them into `directory`, the members' secret last."""
    server_public, _ = zmq.auth.create_certificates(new, SERVER)
    zmq.auth.create_certificates(new, CLIENT)
    (new / AUTHORIZED).mkdir()
    shutil.copy(new / f"{CLIENT}.key", new / AUTHORIZED / f"{MEMBER}.key")
    (new / HOST).mkdir()
    shutil.copy(server_public, new / HOST / f"{SERVER}.key")
    zmq.auth.create_certificates(new / HOST, CLIENT)
    shutil.copy(new / HOST / f"{CLIENT}.key", new / AUTHORIZED / f"{HOST}.key")
    for name in (f"{SERVER}.key", f"{SERVER}.key_secret", AUTHORIZED, HOST, f"{CLIENT}.key", f"{CLIENT}.key_secret"):
        os.replace(new / name, directory / name)
    new.rmdir()


def use_fresh_keys() -> Path:
    """Make a stack's keys in a new temporary directory and point this process and its children at them
    (SOCKLAB_KEYS): for benchmarks that run their own collector."""
    directory = Path(tempfile.mkdtemp(prefix="socklab-keys-"))
    make_keys(directory)
    os.environ["SOCKLAB_KEYS"] = str(directory)
    return directory


def wait_for_keys(directory: Path, timeout: float) -> None:
    """Wait until a client directory holds its keys (the collector may be making them); FileNotFoundError if not."""
    deadline = time.monotonic() + timeout
    needed = (directory / f"{SERVER}.key", directory / f"{CLIENT}.key_secret")
    while not all(path.exists() for path in needed):
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no CurveZMQ keys in {directory} after {timeout} s (SOCKLAB_KEYS)")
        time.sleep(0.05)


def load_client_keys(directory: Path, timeout: float = KEY_WAIT) -> ClientKeys:
    """A client directory's keys, read again only when its files change (a stack made anew has new keys)."""
    wait_for_keys(directory, timeout)
    stamps = tuple((directory / name).stat().st_mtime_ns for name in (f"{SERVER}.key", f"{CLIENT}.key_secret"))
    return read_client_keys(directory, stamps)


@lru_cache(maxsize=16)
def read_client_keys(directory: Path, _stamps: tuple[int, ...]) -> ClientKeys:
    """Read a client directory's keys (cached per version of its files)."""
    server_public, _ = zmq.auth.load_certificate(directory / f"{SERVER}.key")
    public, secret = zmq.auth.load_certificate(directory / f"{CLIENT}.key_secret")
    if secret is None:
        raise ValueError(f"{directory / CLIENT}.key_secret holds no secret key")
    return ClientKeys(server_public, public, secret)


def secure_client(sock: zmq.Socket, directory: Path | str | None = None) -> None:
    """Make `sock` a CurveZMQ client of the collector, with the keys of `directory` (default SOCKLAB_KEYS)."""
    keys = load_client_keys(Path(directory) if directory else keys_dir())
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


def limit_message_size(sock: zmq.Socket, most: int) -> None:
    """Refuse messages whose payload exceeds `most` bytes (ZMQ_MAXMSGSIZE: a bigger one drops the connection).
    libzmq counts a CurveZMQ message with its encryption's bytes, so the limit leaves room for them: without it a
    payload of exactly `most` bytes would be refused, and a reporter would resend it forever."""
    sock.setsockopt(zmq.MAXMSGSIZE, most + CURVE_MESSAGE_OVERHEAD)


def secure_server(sock: zmq.Socket, directory: Path | str | None = None) -> None:
    """Make `sock` a CurveZMQ server that only the keys in authorized/ may reach; refusals are counted."""
    directory = Path(directory) if directory else keys_dir()
    public, secret = zmq.auth.load_certificate(directory / f"{SERVER}.key_secret")
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.zap_domain = ZAP_DOMAIN.encode()
    gatekeeper(sock.context, directory / AUTHORIZED).watch(sock)


def refusals() -> dict[str, int]:
    """Handshakes this process's collector sockets refused, by reason."""
    with _refused_lock:
        return dict(_refused)


def count_refusal(reason: str, peer: str, detail: str) -> None:
    """Count a refused handshake and log it (the 1st, 10th, 100th, then every 1000th of a reason)."""
    with _refused_lock:
        _refused[reason] += 1
        count = _refused[reason]
    if count in (1, 10, 100) or count % 1000 == 0:
        log.warning("refused handshake #%d (%s) at %s: %s", count, reason, peer, detail)


def gatekeeper(context: zmq.Context, authorized: Path) -> Gatekeeper:
    """The context's gatekeeper, started on first use (one ZAP handler per context)."""
    with _gatekeepers_lock:
        keeper = _gatekeepers.get(id(context))
        if keeper is None:
            keeper = _gatekeepers[id(context)] = Gatekeeper(context, authorized)
            keeper.start()
        return keeper


class Gatekeeper(threading.Thread):
    """Answers ZAP requests from the authorized keys and reads the curve servers' handshake failures.

    Its sockets are made with zmq.Socket, outside the context's own list, so terminating or destroying the
    context does not close them under its feet: the context's end (ETERM) stops the thread, which closes them.
    """

    def __init__(self, context: zmq.Context, authorized: Path) -> None:
        super().__init__(name="socklab-zap", daemon=True)
        self.context, self.authorized = context, authorized
        self.keys: dict[bytes, str] = {}
        self.new_monitors: queue.SimpleQueue[zmq.Socket] = queue.SimpleQueue()
        self.zap = zmq.Socket(context, zmq.REP)
        self.zap.linger = 0
        self.zap.bind(ZAP_ENDPOINT)  # before any server socket exists, so no handshake goes unchecked
        self.load_keys()

    def load_keys(self) -> None:
        """Read the authorized public keys, each named after its file."""
        keys = {}
        for path in sorted(self.authorized.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                log.warning("authorized key %s skipped: %s", path, exc)
                continue
            keys[public] = path.stem
        self.keys = keys

    def watch(self, sock: zmq.Socket) -> None:
        """Follow a server socket's handshake failures (the monitor is connected here, so no event is missed)."""
        address = f"inproc://socklab-monitor-{next(_monitor_ids)}"
        sock.monitor(address, WATCHED_EVENTS)
        monitor = zmq.Socket(self.context, zmq.PAIR)
        monitor.linger = 0
        monitor.connect(address)
        self.new_monitors.put(monitor)

    def run(self) -> None:
        """Serve until the context ends."""
        poller = zmq.Poller()
        poller.register(self.zap, zmq.POLLIN)
        monitors: list[zmq.Socket] = []
        try:
            while True:
                while not self.new_monitors.empty():
                    monitors.append(self.new_monitors.get())
                    poller.register(monitors[-1], zmq.POLLIN)
                for sock, _ in poller.poll(100):
                    if sock is self.zap:
                        self.zap.send_multipart(self.answer(self.zap.recv_multipart()))
                    elif not self.read_event(sock):
                        poller.unregister(sock)
                        monitors.remove(sock)
                        sock.close()
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in [self.zap, *monitors]:
                sock.close()
            with _gatekeepers_lock:
                _gatekeepers.pop(id(self.context), None)

    def answer(self, request: list[bytes]) -> list[bytes]:
        """One ZAP reply (RFC 27): 200 for an authorized public key, 400 (counted) for any other."""
        if len(request) < 6 or request[0] != ZAP_VERSION:
            count_refusal(MALFORMED, "?", "malformed ZAP request")
            return [ZAP_VERSION, request[1] if len(request) > 1 else b"", b"400", b"malformed ZAP request", b"", b""]
        request_id, address, mechanism = request[1], request[3].decode(errors="replace"), request[5]
        public = zmq.utils.z85.encode(request[6]) if mechanism == b"CURVE" and len(request) > 6 else b""
        name = self.keys.get(public)
        if name is None and public:
            self.load_keys()  # a key added to authorized/ counts without a restart
            name = self.keys.get(public)
        if name is None:
            count_refusal(UNKNOWN_KEY, address, f"public key {public.decode()} is not authorized")
            return [ZAP_VERSION, request_id, b"400", b"unknown key", b"", b""]
        return [ZAP_VERSION, request_id, b"200", b"OK", name.encode(), b""]

    def read_event(self, monitor: zmq.Socket) -> bool:
        """Count one handshake failure by its reason; False once the watched socket is gone."""
        event = parse_monitor_message(monitor.recv_multipart())
        if event["event"] == zmq.EVENT_MONITOR_STOPPED:
            return False
        reason, detail = handshake_failure(event["event"], event["value"])
        count_refusal(reason, event["endpoint"].decode(errors="replace"), f"handshake failed ({detail})")
        return True


def handshake_failure(event: int, value: int) -> tuple[str, str]:
    """A failed handshake's reason and words, from libzmq's monitor event and its value (a ZMTP protocol error
    code, or the errno of a connection that ended during the handshake)."""
    if event != zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:  # a plain peer often hangs up before its greeting is read
        return NO_KEY, f"closed before the handshake ended, errno {value}"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return NO_KEY, "no CurveZMQ"
    if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return WRONG_SERVER_KEY, "its HELLO does not open with this collector's key"
    return MALFORMED, f"protocol error {value:#x}"
