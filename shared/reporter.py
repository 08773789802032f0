"""The one reporter: numbers records, keeps each until the collector has it on disk, never makes the data path wait.

The data path only numbers a record and appends it to a bounded window; a courier thread owns the
DEALER socket, packs what it finds queued at each wakeup and sends it as one BATCH message (never
blocking), reads the collector's acks and forgets what they cover.
When the connection breaks and comes back (a collector killed and restarted) it resends what it had
sent before the break; on a live connection it resends what waited too long for its ack. When the
window is full a record is dropped and counted, and the gap (how many, which sequence numbers) is sent
as a message of its own once there is room, so the collector can show what was lost. A record bigger
than the collector takes is found by the courier as it packs it, and goes as a gap of its own number.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from shared.curve import limit_message_size, secure_client
from shared.delivery import (
    MAX_ACK,
    SEND_QUEUE,
    Gap,
    MessageKind,
    batches,
    pack_batch,
    pack_gap,
    pack_item,
    unpack_ack,
)
from shared.host_topology import read_topology
from shared.names import Name
from shared.record import MAX_RECORD, METHODS, Method, Observation, Record, Role, pack_record, socket_kind

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 10_000
RESEND_AFTER = 5.0  # seconds a record may wait for its ack on a live connection before it is sent again
COURIER_TICK = 0.1  # the courier's longest sleep while records await an ack: resends wait at most this long
BUSY_TICK = 0.005  # while records flow the courier wakes this often and takes all at once: no wake-up per record
BUSY_FOR = 0.5  # seconds after the last record the courier stays on BUSY_TICK
REJECT_RATE = 10.0  # refused inputs logged and reported a second, at most; the rest are only counted
REJECT_BURST = 20


class RateLimit:
    """A token bucket: `rate` a second, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def allow(self, now: float) -> bool:
        """Take a token if one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def connect_dealer(context: zmq.Context, endpoint: str, keys: str | None = None) -> zmq.Socket:
    """The reporter's one socket: a DEALER connected to the collector's ROUTER (the stable side binds), a
    CurveZMQ client with the keys in `keys` (a directory; default SOCKLAB_KEYS)."""
    dealer = context.socket(zmq.DEALER)
    secure_client(dealer, keys)
    dealer.setsockopt(zmq.SNDHWM, SEND_QUEUE)  # batches, not records: the window holds what waits
    dealer.setsockopt(zmq.LINGER, 0)  # what matters is acknowledged or still in the window
    limit_message_size(dealer, MAX_ACK)  # it receives acks only
    dealer.connect(endpoint)
    return dealer


class Reporter:
    """Numbered, acknowledged, resent records; a full window drops and says so."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        service: str,
        *,
        window: int = DEFAULT_WINDOW,
        resend_after: float = RESEND_AFTER,
        node: str = "",
        keys: str | None = None,
    ) -> None:
        self.service = service
        self.host = socket.gethostname()
        self.node = node
        self.id = uuid.uuid4().bytes
        self.window = window
        self.resend_after = resend_after
        self.sent = 0
        self.window_drops = 0  # counted by the data path
        self.oversized = 0  # counted by the courier
        self.unpackable = 0  # counted by the courier
        self.rejects = RateLimit(REJECT_RATE, REJECT_BURST)
        self.unreported_rejects = 0
        self.acked = 0
        self.resent = 0
        self.bad_acks = 0
        self._seq = itertools.count(1)
        self._gap: Gap | None = None
        self._unacked: dict[int, tuple[bytes, float]] = {}  # seq -> (packed batch item, when packed or last sent)
        self._fresh: collections.deque[tuple[int, Record | Gap]] = collections.deque()  # numbered, for the courier
        self._unsent: list[bytes] = []  # the courier's: packed and kept in the window, not yet sent
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._closing = threading.Event()
        self._asleep = False  # the courier is in its long sleep: the next record wakes it
        self._last_queued = 0.0
        self._broken_at: float | None = None  # when the connection broke, while it is broken
        self._dealer = connect_dealer(context, endpoint, keys)
        self._courier = threading.Thread(target=self._run_courier, name=f"reporter-{service}", daemon=True)
        self._courier.start()

    @property
    def unacked(self) -> int:
        """Records queued or sent that the collector has not yet said are stored (one being packed may count twice)."""
        return len(self._fresh) + len(self._unacked)

    @property
    def dropped(self) -> int:
        """Records dropped: the window full, bigger than the collector takes, or not packable."""
        return self.window_drops + self.oversized + self.unpackable

    def report(self, record: Record) -> bool:
        """Queue one record of any kind without waiting; False when the window is full and it was dropped: its
        number then joins the gap the next record reports."""
        if not record.node and self.node:
            record = replace(record, node=self.node)
        seq = next(self._seq)
        if self.unacked >= self.window:
            self.window_drops += 1
            first = self._gap.first if self._gap else seq
            self._gap = Gap(first, seq, self.service)
            if self.window_drops in (1, 10, 100) or self.window_drops % 1000 == 0:
                log.warning("report window full: %d records dropped", self.window_drops)
            return False
        if self._gap is not None:
            gap, self._gap = self._gap, None
            self._queue(seq, gap)
            seq = next(self._seq)
        self._queue(seq, record)
        self.sent += 1
        return True

    def _queue(self, seq: int, payload: Record | Gap) -> None:
        """Hand a numbered record or gap to the courier, which packs and keeps it; wake the courier only if it
        sleeps."""
        self._last_queued = time.monotonic()
        self._fresh.append((seq, payload))
        if self._asleep:
            self._asleep = False
            os.eventfd_write(self._wake, 1)

    def report_topology(self) -> bool:
        """Say once, at start, where this service runs: its interfaces, addresses and routes."""
        return self.report(replace(read_topology(self.service, self.host), drops=self.dropped))

    def observe(
        self,
        sock: socket.socket,
        method: str,
        flow: str | None,
        role: Role,
        *,
        local: Name | None = None,
        remote: Name | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Report what `method` on `sock` said, tagging proto and family from the socket itself."""
        proto, family = socket_kind(sock)
        return self.report(
            Observation(
                service=self.service,
                host=self.host,
                node=self.node,
                flow=flow,
                role=role,
                proto=proto,
                family=family,
                method=METHODS.get(method) or Method(method),
                local=local,
                remote=remote,
                drops=self.dropped,
                extra=extra or {},
            )
        )

    def reject(self, sock: socket.socket, method: str, remote: Name, reason: Exception) -> None:
        """Log input a parser refused and report who sent it, so the collector counts it per service; past
        REJECT_RATE a second a refusal is only counted, and the next one reported carries that count."""
        if not self.rejects.allow(time.monotonic()):
            self.unreported_rejects += 1
            return
        extra: dict[str, Any] = {"rejected": str(reason)}
        if self.unreported_rejects:
            extra["unreported"] = self.unreported_rejects
        log.warning(
            "%s rejected %s input from %s: %s%s",
            self.service,
            method,
            remote,
            reason,
            f" (and {self.unreported_rejects} more before, not logged)" if self.unreported_rejects else "",
        )
        self.unreported_rejects = 0
        self.observe(sock, method, None, Role.SERVER, remote=remote, extra=extra)

    def flush(self, timeout: float) -> bool:
        """Wait until the collector has acknowledged every record so far; False if the time ran out."""
        deadline = time.monotonic() + timeout
        while self.unacked and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.unacked

    def close(self, grace: float = 2.0) -> None:
        """Give unacknowledged records `grace` seconds to be stored, then stop; say how many were not."""
        self.flush(grace)
        self._closing.set()
        os.eventfd_write(self._wake, 1)
        self._courier.join()
        os.close(self._wake)
        if self.unacked:
            log.warning("%d records of %s not acknowledged at close", self.unacked, self.service)

    def _run_courier(self) -> None:
        """Send, read acks and resend until closed; the only thread that touches the socket."""
        monitor = self._dealer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        idle, busy = zmq.Poller(), zmq.Poller()
        for sock in (self._dealer, self._wake, monitor):
            idle.register(sock, zmq.POLLIN)
        busy.register(monitor, zmq.POLLIN)
        resend_at = time.monotonic() + self.resend_after
        try:
            while not self._closing.is_set():
                ready = self._wait(idle, busy)
                if monitor in ready:
                    self._follow_connection(monitor)
                self._take_acks()
                self._send_fresh()
                if self._broken_at is None and time.monotonic() >= resend_at:
                    self._resend(time.monotonic() - self.resend_after)
                    resend_at = time.monotonic() + self.resend_after / 4
        except zmq.ZMQError as exc:  # the context was terminated under us: nothing left to deliver with
            log.warning("reporter of %s stopped: %s; %d records unacknowledged", self.service, exc, len(self._unacked))
        finally:
            monitor.close(linger=0)
            self._dealer.close(linger=0)

    def _wait(self, idle: zmq.Poller, busy: zmq.Poller) -> dict[Any, int]:
        """While records flow, a short sleep (acks and records are then taken in bulk); else a long one that an
        ack, a connection event or the next record (through the eventfd) ends: with nothing awaiting an ack there
        is nothing to resend, so an idle courier sleeps until one of them comes."""
        if time.monotonic() - self._last_queued < BUSY_FOR:
            return dict(busy.poll(int(BUSY_TICK * 1000)))
        self._asleep = True
        if self._fresh:  # queued after the check above, before the data path could see us asleep
            self._asleep = False
            return {}
        ready = dict(idle.poll(int(COURIER_TICK * 1000) if self._unacked else None))
        self._asleep = False
        if self._wake in ready:
            os.eventfd_read(self._wake)
        return ready

    def _follow_connection(self, monitor: zmq.Socket) -> None:
        """Track the connection; on a reconnect, resend what was sent before the old one broke (it may have died
        with the collector). What was queued while disconnected goes out on the new connection by itself."""
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED and self._broken_at is None:
                self._broken_at = time.monotonic()
            elif event == zmq.EVENT_CONNECTED and self._broken_at is not None:
                self._resend(self._broken_at)
                self._broken_at = None

    def _send_fresh(self) -> None:
        """Pack what the data path queued (it is then kept until acknowledged) and send it, in order, in batches,
        until the socket's queue is full; what is left waits for the next wakeup, in the window's bound."""
        while self._fresh:  # the data path only appends: the front is the courier's
            self._unsent.append(self._pack(*self._fresh[0]))
            self._fresh.popleft()  # only now: until it is in the window, it counts in the queue
        sent = 0
        for start, end in batches(self._unsent):
            if not self._send_batch(self._unsent[start:end]):
                break
            sent = end
        del self._unsent[:sent]

    def _pack(self, seq: int, payload: Record | Gap) -> bytes:
        """A queued record or gap as a batch item, kept until acknowledged; a record bigger than the collector
        takes goes as a gap of its own number."""
        if isinstance(payload, Gap):
            item = pack_item(MessageKind.GAP, seq, pack_gap(payload))
        elif (data := self._packed(payload)) is None:
            item = pack_item(MessageKind.GAP, seq, pack_gap(Gap(seq, seq, self.service)))
        else:
            item = pack_item(MessageKind.RECORD, seq, data)
        self._unacked[seq] = (item, time.monotonic())
        return item

    def _packed(self, record: Record) -> bytes | None:
        """A record's bytes, or None (logged and counted) when it cannot go: bigger than the collector takes, or
        holding what msgpack cannot write (a set, an object in `extra`); the courier must outlive any record."""
        try:
            data = pack_record(record)
        except (TypeError, ValueError, OverflowError) as exc:
            self.unpackable += 1
            log.warning("a %s record cannot be packed: dropped (%s)", self.service, exc)
            return None
        if len(data) > MAX_RECORD:
            self.oversized += 1
            log.warning("a %s record of %d bytes exceeds %d: dropped", self.service, len(data), MAX_RECORD)
            return None
        return data

    def _send_batch(self, items: list[bytes]) -> bool:
        """One BATCH message of these items, without blocking; False when the socket's queue is full."""
        try:
            self._dealer.send(pack_batch(self.id, items), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _take_acks(self) -> None:
        """Forget every record the collector says is stored."""
        while True:
            try:
                frame = self._dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reporter, ranges = unpack_ack(frame)
                if reporter != self.id:
                    raise ValueError("ack is for another reporter")
            except ValueError as exc:
                self.bad_acks += 1
                log.warning("bad ack #%d from the collector: %s", self.bad_acks, exc)
                continue
            for first, last in ranges:
                for seq in range(first, last + 1):
                    if self._unacked.pop(seq, None) is not None:
                        self.acked += 1

    def _resend(self, sent_before: float) -> None:
        """Send again, in batches, every unacknowledged record last sent before `sent_before` (a monotonic time)."""
        now = time.monotonic()
        due = [(seq, item) for seq, (item, when) in self._unacked.items() if when <= sent_before]
        for start, end in batches([item for _, item in due]):
            if not self._send_batch([item for _, item in due[start:end]]):
                return
            for seq, item in due[start:end]:
                self._unacked[seq] = (item, now)
            self.resent += end - start
