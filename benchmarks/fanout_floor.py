"""The floor under one gateway's fan-out: what a delivery costs in Python and in the kernel.

A fan-out delivery in natter's gateway is its own Python work (the hub's per-room loop, the
socket's send queue, the direct sink's checks: :mod:`gateway.hub`, :mod:`gateway.writer`,
:mod:`gateway.wire`) plus one ``transport.write`` of the prebuilt frame, that is one ``send()``
on a TCP socket, which on loopback also runs the receiver's TCP work and wakes it. This script
measures the two parts apart, on this machine:

1. **python**: the gateway's own classes (``Hub``, ``SendQueue``, ``DirectSink``, ``Outbound``)
   relaying ``--messages`` frames to ``--sockets`` subscribers whose transport ``write`` is a C
   no-op; nanoseconds of CPU per delivery.
2. **send**: one process holding ``--sockets`` accepted loopback TCP sockets (``TCP_NODELAY``,
   non-blocking, as uvloop sets them) writes the same frame to each, ``--messages`` times
   (``--rate`` bursts per second, as a room's messages come), while a second process reads every
   socket with ``epoll``; microseconds of the writer's CPU per
   ``send()`` and of the reader's per frame received.

The writer's CPU per ``send()`` is the least a single-process gateway can spend per delivery on
this kernel, whatever it is written in, so ``1e6 / send_us`` bounds one gateway's deliveries
per second on one core (docs/benchmarks.md, "Fan-out: the floor").

Bounded: ``--sockets x --messages`` sends (default 1,000 x 200), loopback only; the reader
stops when it has every byte or after 60 s. Prints a Markdown table; ``--repeat`` runs each part
that many times and reports the median.

Usage::

    python benchmarks/fanout_floor.py [--sockets 1000] [--messages 200] [--rate 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import select
import socket
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import uvloop

from gateway.hub import Hub
from gateway.wire import DirectSink, Outbound, text_frame
from gateway.writer import SendQueue

#: A ``message`` frame of the size the saturation scenario relays (~230 bytes of JSON).
PAYLOAD = (
    b'{"type":"message","room":"fanout","data":{"id":"fanout:123456","seq":123456,'
    b'"user_id":"0123456789abcdef0123456789abcdef","username":"bench-sender",'
    b'"message":"m 1 123456 1765000000000000 xxxxxxxxxxxxxxxxxxxxxxxx",'
    b'"timestamp":"2026-12-07T22:00:00.000Z","client_msg_id":"bench-1-123456"}}'
)


class _NullTransport:
    """A transport whose calls are C builtins: ``write`` measures nothing but the call."""

    write = staticmethod(len)
    is_closing = staticmethod(bool)  # bool() is False


class _Writable:
    is_set = staticmethod(True.__bool__)


class _NullProtocol:
    """The attributes :class:`~gateway.wire.DirectSink` reads from uvicorn's protocol."""

    close_sent = False
    disconnected = False

    def __init__(self) -> None:
        self.transport = _NullTransport()
        self.writable = _Writable()


class _Subscriber:
    """The part of :class:`gateway.connection.Connection` a fan-out runs: ``enqueue``."""

    __slots__ = ("_held", "conn_id", "queue", "user_id")

    def __init__(self, index: int) -> None:
        self.conn_id = self.user_id = str(index)
        self._held: list[Outbound] | None = None
        self.queue = SendQueue(DirectSink(_NullProtocol()), _never, _never, 1000)

    def __hash__(self) -> int:
        return id(self)

    def enqueue(self, frame: Outbound) -> None:
        if self._held is not None:
            self._held.append(frame)
            return
        if not self.queue.put(frame):
            raise RuntimeError("overflow")


async def _never(*_: object) -> None:  # pragma: no cover - the null sink is always ready
    raise AssertionError("the null sink never queues")


def python_ns_per_delivery(sockets: int, messages: int) -> float:
    """CPU nanoseconds per delivery of the gateway's own fan-out code (no I/O)."""
    hub = Hub()
    for index in range(sockets):
        subscriber = _Subscriber(index)
        hub.join_pending("fanout", subscriber)
        hub.join_complete("fanout", subscriber, 0)
    frames = [Outbound(PAYLOAD) for _ in range(messages)]
    started = time.process_time_ns()
    for seq, frame in enumerate(frames, start=1):
        hub.deliver_message("fanout", seq, frame)
    return (time.process_time_ns() - started) / (sockets * messages)


def _reader(port: int, sockets: int, expected: int, pipe: Connection) -> None:
    """Connect ``sockets`` clients, then read until ``expected`` bytes arrived over all."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
    poller = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    for client in clients:
        client.setblocking(False)
        poller.register(client.fileno(), select.EPOLLIN)
        by_fd[client.fileno()] = client
    pipe.send("ready")
    pipe.recv()  # the writer starts
    started = time.process_time_ns()
    received = 0
    deadline = time.monotonic() + 60
    while received < expected and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            try:
                data = by_fd[fd].recv(65536)
            except BlockingIOError:
                continue
            received += len(data)
    pipe.send((time.process_time_ns() - started, received))
    for client in clients:
        client.close()


def _bursts(writes: list[Callable[[bytes], object]], frame: bytes, messages: int, rate: float) -> int:
    """Write ``frame`` with each of ``writes``, ``messages`` times; CPU ns spent writing.

    With ``rate`` (messages/s) each burst starts at its scheduled time, else back to back.
    """
    writer_ns = 0
    begin = time.monotonic()
    for index in range(messages):
        if rate:  # one burst per message at its scheduled time, as a room's fan-out comes
            pause = begin + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # blocks the loop too: nothing else runs in this process
        started = time.process_time_ns()
        for write in writes:
            write(frame)
        writer_ns += time.process_time_ns() - started
    return writer_ns


def send_us_per_delivery(
    sockets: int, messages: int, rate: float, *, uvloop_transport: bool
) -> tuple[float, float]:
    """``(writer us per delivery, reader us per frame)`` over loopback TCP.

    The writer is plain ``socket.send`` or, with ``uvloop_transport``, uvloop's
    ``transport.write`` (what uvicorn's protocols and natter's direct sink call).

    Raises:
        RuntimeError: the reader did not connect, finish or get every byte.
    """
    frame = text_frame(PAYLOAD)
    listener = socket.create_server(("127.0.0.1", 0), backlog=sockets)
    port = listener.getsockname()[1]
    parent, child = multiprocessing.Pipe()
    reader = multiprocessing.get_context("spawn").Process(
        target=_reader, args=(port, sockets, len(frame) * sockets * messages, child)
    )
    reader.start()
    try:
        if uvloop_transport:
            writer_ns = uvloop.run(_uvloop_writer(listener, sockets, parent, frame, messages, rate))
        else:
            accepted = []
            for _ in range(sockets):
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)  # a full buffer raises BlockingIOError: the reader keeps up
                accepted.append(conn)
            _start(parent)
            writer_ns = _bursts([conn.send for conn in accepted], frame, messages, rate)
        if not parent.poll(90):
            raise RuntimeError("reader did not finish")
        reader_ns, received = parent.recv()
    finally:
        listener.close()
        reader.join(10)
        if reader.is_alive():
            reader.kill()
    deliveries = sockets * messages
    if received != len(frame) * deliveries:
        raise RuntimeError(f"reader got {received} of {len(frame) * deliveries} bytes")
    return writer_ns / deliveries / 1000, reader_ns / deliveries / 1000


def _start(parent: Connection) -> None:
    if not parent.poll(60) or parent.recv() != "ready":
        raise RuntimeError("reader did not connect")
    parent.send("go")


async def _uvloop_writer(
    listener: socket.socket, sockets: int, parent: Connection, frame: bytes, messages: int, rate: float
) -> int:
    transports: list[asyncio.Transport] = []

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]

    server = await asyncio.get_running_loop().create_server(Accepted, sock=listener)
    deadline = time.monotonic() + 60
    while len(transports) < sockets and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a count
        await asyncio.sleep(0.01)
    _start(parent)
    writer_ns = _bursts([transport.write for transport in transports], frame, messages, rate)
    while not parent.poll(0) and time.monotonic() < deadline + 60:  # noqa: ASYNC110 - polls a pipe
        await asyncio.sleep(0.01)  # let uvloop flush anything it had to buffer
    server.close()
    for transport in transports:
        transport.close()
    return writer_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s (0: back to back)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    python_runs = [python_ns_per_delivery(args.sockets, args.messages) for _ in range(args.repeat)]
    plain, uv = (
        [
            send_us_per_delivery(args.sockets, args.messages, args.rate, uvloop_transport=transport)
            for _ in range(args.repeat)
        ]
        for transport in (False, True)
    )
    pace = f"{args.rate:g} messages/s" if args.rate else "back to back"
    size = len(text_frame(PAYLOAD))
    print(f"fan-out floor: {args.sockets} sockets x {args.messages} frames of {size} bytes,")  # noqa: T201
    print(f"{pace}, median of {args.repeat}, {os.cpu_count()} CPUs\n")  # noqa: T201
    print("| part | CPU per delivery | runs | deliveries/s on one core |")  # noqa: T201
    print("|---|---|---|---|")  # noqa: T201
    rows = [
        ("gateway's Python (hub, send queue, sink), no I/O", [ns / 1000 for ns in python_runs]),
        ("one loopback `socket.send()` (writer)", [run[0] for run in plain]),
        ("one uvloop `transport.write()` (writer)", [run[0] for run in uv]),
        ("reading one frame (reader: epoll + recv)", [run[1] for run in plain + uv]),
    ]
    for label, values in rows:
        median = statistics.median(values)
        runs = " / ".join(f"{value:.2f}" for value in values)
        print(f"| {label} | {median:.2f} us | {runs} | {1e6 / median:,.0f} |")  # noqa: T201


if __name__ == "__main__":
    main()
