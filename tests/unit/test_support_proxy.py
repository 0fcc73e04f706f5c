from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.proxy import FaultProxy


class EchoServer:
    """Threaded echo server on 127.0.0.1; echoes until the peer half-closes, then closes."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._serve, daemon=True)
        self._accept_thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65_536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accept_thread.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(n - len(chunks))
        if not data:
            break
        chunks += data
    return bytes(chunks)


def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    with _connect(port) as sock:
        sock.sendall(payload)
        return _recv_exactly(sock, len(payload))


def _connection_is_dead(sock: socket.socket) -> bool:
    """True once the peer reset or closed the connection."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"x")
            data = sock.recv(1)
        except TimeoutError:
            continue
        except OSError:
            return True
        if not data:
            return True
    return False


def test_forwards_bytes(proxy: FaultProxy) -> None:
    assert proxy.port > 0 and proxy.state == "open"
    assert _roundtrip(proxy.port, b"hello world") == b"hello world"


def test_forwards_large_payload_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 16_384  # 4 MiB, larger than the proxy buffers
    with _connect(proxy.port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        received = _recv_exactly(sock, len(payload))
        sender.join(timeout=10)
    assert received == payload


def test_half_close_is_propagated(proxy: FaultProxy) -> None:
    with _connect(proxy.port) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert _recv_exactly(sock, 100) == b"last words"
        assert sock.recv(10) == b""


def test_many_concurrent_connections(proxy: FaultProxy) -> None:
    socks = [_connect(proxy.port) for _ in range(20)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(f"msg-{i:02d}".encode())
        for i, sock in enumerate(socks):
            assert _recv_exactly(sock, 6) == f"msg-{i:02d}".encode()
        assert proxy.active_connections == 20
    finally:
        for sock in socks:
            sock.close()


def test_cut_breaks_live_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    with _connect(proxy.port) as live:
        live.sendall(b"before")
        assert _recv_exactly(live, 6) == b"before"
        proxy.cut()
        assert proxy.state == "cut"
        with pytest.raises(ConnectionResetError):
            live.recv(10)
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy.port)
    assert proxy.active_connections == 0


def test_restore_forwards_again_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.cut()
    with pytest.raises(ConnectionRefusedError):
        _connect(port)
    proxy.restore()
    assert proxy.port == port and proxy.state == "open"
    assert _roundtrip(port, b"again") == b"again"
    proxy.cut()
    proxy.restore()
    assert _roundtrip(port, b"and again") == b"and again"


def test_stall_holds_bytes_until_restore(proxy: FaultProxy) -> None:
    with _connect(proxy.port) as sock:
        proxy.stall()
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.restore()
        sock.settimeout(5)
        assert _recv_exactly(sock, 4) == b"held"


def test_unreachable_target_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as tmp:
        dead_port = tmp.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        try:
            sock = _connect(proxy.port)
        except ConnectionResetError:
            return  # the reset won the race against connect() returning
        with sock:
            assert _connection_is_dead(sock)


def test_server_reset_reaches_the_client(echo: EchoServer, proxy: FaultProxy) -> None:
    with _connect(proxy.port) as sock:
        sock.sendall(b"x")
        assert _recv_exactly(sock, 1) == b"x"
        echo.close()
        assert _connection_is_dead(sock)


def test_close_is_idempotent_and_releases_the_port(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    port = proxy.port
    proxy.close()
    proxy.close()
    with pytest.raises(ConnectionRefusedError):
        _connect(port)


async def test_controllable_while_the_event_loop_is_busy(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"async")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"async"
        proxy.cut()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.restore()
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer2.write(b"back")
        assert await asyncio.wait_for(reader2.readexactly(4), 5) == b"back"
        writer2.close()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
