"""A fault-injecting TCP proxy running on its own thread.

All sockets are owned by a single I/O thread driven by a selector; the public methods post
commands to that thread and wait for them to complete, so the proxy can be controlled from
synchronous code, from async tests (even while their event loop is blocked) and from other
threads alike.

States:

* open     -- accept connections and forward bytes in both directions;
* cut      -- every live connection is reset (RST on both sides) and the listening socket
  is closed, so new connections are refused: the server looks unreachable;
* stalled  -- connections stay open but no byte is forwarded (a network black hole).
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["FaultProxy"]

State = Literal["open", "cut", "stalled"]

_RECV_SIZE = 65_536
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(eq=False)
class _Conn:
    client: socket.socket
    upstream: socket.socket
    started: float
    connecting: bool = True
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    upstream_eof: bool = False
    upstream_shut: bool = False
    client_shut: bool = False


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` so that the peer gets a RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 128,
        buffer_limit: int = 1 << 20,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port: int = 0
        self.max_connections = max_connections
        self.buffer_limit = buffer_limit
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.accepted = 0
        self._state: State = "open"
        self._conns: set[_Conn] = set()
        self._interest: dict[socket.socket, int] = {}
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._commands: queue.Queue[tuple[Callable[[], object], Future[object]]] = queue.Queue(
            maxsize=64
        )
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._target_family: socket.AddressFamily = socket.AF_INET
        self._target: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes] = (
            target_host,
            target_port,
        )

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> State:
        return self._state

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def active_connections(self) -> int:
        return self._call(lambda: len(self._conns))  # type: ignore[return-value]

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        family, _, _, _, target = socket.getaddrinfo(
            self.target_host, self.target_port, type=socket.SOCK_STREAM
        )[0]
        self._target_family = family
        self._target = target
        self._listener = self._bind(0)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._set_interest(self._wake_r, selectors.EVENT_READ, "wake")
        self._set_interest(self._listener, selectors.EVENT_READ, "listener")
        self._thread = threading.Thread(
            target=self._run, name=f"FaultProxy-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def cut(self) -> None:
        """Reset every live connection and refuse new ones until ``restore()``."""
        self._call(self._do_cut)

    def stall(self) -> None:
        """Keep connections open but stop forwarding bytes until ``restore()``."""
        self._call(self._do_stall)

    def restore(self) -> None:
        """Accept and forward again (after ``cut()`` or ``stall()``)."""
        self._call(self._do_restore)

    def close(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._cleanup()
            return
        try:
            self._call(self._do_stop)
        finally:
            thread.join(timeout=self.command_timeout)

    def __enter__(self) -> FaultProxy:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FaultProxy(127.0.0.1:{self.port} -> {self.target_host}:{self.target_port}, "
            f"state={self._state})"
        )

    # ------------------------------------------------------------------ plumbing

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _call(self, fn: Callable[[], object]) -> object:
        thread = self._thread
        if thread is None:
            raise RuntimeError("FaultProxy is not started")
        if threading.current_thread() is thread:
            return fn()
        if not thread.is_alive():
            raise RuntimeError(f"FaultProxy I/O thread is not running (error: {self._error!r})")
        future: Future[object] = Future()
        self._commands.put((fn, future), timeout=self.command_timeout)
        assert self._wake_w is not None
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")
        return future.result(timeout=self.command_timeout)

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping:
                for key, events in selector.select(timeout=0.25):
                    self._dispatch(key.data, key.fileobj, events)  # type: ignore[arg-type]
                    if self._stopping:
                        break
                self._expire_connects()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._stopping = True
            self._cleanup()
            self._fail_pending()

    def _dispatch(self, data: object, sock: socket.socket, events: int) -> None:
        if data == "wake":
            with contextlib.suppress(BlockingIOError, OSError):
                sock.recv(4096)
            self._run_commands()
        elif data == "listener":
            self._accept()
        elif isinstance(data, _Conn):
            self._handle(data, sock, events)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _fail_pending(self) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                if self._error is None:
                    future.set_result(None)
                else:
                    future.set_exception(RuntimeError(f"FaultProxy crashed: {self._error!r}"))

    # ------------------------------------------------------------------ commands

    def _do_cut(self) -> None:
        self._state = "cut"
        for conn in list(self._conns):
            self._abort(conn)
        if self._listener is not None:
            self._set_interest(self._listener, 0, "listener")
            self._listener.close()
            self._listener = None

    def _do_stall(self) -> None:
        if self._state == "cut":
            raise RuntimeError("restore() the proxy before stalling it")
        self._state = "stalled"
        for conn in list(self._conns):
            self._update(conn)

    def _do_restore(self) -> None:
        if self._listener is None:
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    self._listener = self._bind(self.port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._set_interest(self._listener, selectors.EVENT_READ, "listener")
        self._state = "open"
        for conn in list(self._conns):
            self._update(conn)

    def _do_stop(self) -> None:
        self._stopping = True

    def _cleanup(self) -> None:
        for conn in list(self._conns):
            self._abort(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener = None
        if self._selector is not None:
            with contextlib.suppress(Exception):
                self._selector.close()
        self._interest.clear()

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(32):
            try:
                client, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.accepted += 1
            if self._state == "cut" or len(self._conns) >= self.max_connections:
                _reset(client)
                continue
            client.setblocking(False)
            upstream = socket.socket(self._target_family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client=client, upstream=upstream, started=time.monotonic())
            self._conns.add(conn)
            try:
                err = upstream.connect_ex(self._target)
            except OSError:
                self._abort(conn)
                continue
            if err == 0:
                conn.connecting = False
            elif err not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                self._abort(conn)
                continue
            self._update(conn)

    def _expire_connects(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.connecting and now - conn.started > self.connect_timeout:
                self._abort(conn)

    def _handle(self, conn: _Conn, sock: socket.socket, events: int) -> None:
        if conn not in self._conns:
            return
        try:
            if sock is conn.upstream and conn.connecting:
                err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._abort(conn)
                    return
                conn.connecting = False
            else:
                if events & selectors.EVENT_WRITE:
                    self._flush(conn, sock)
                if events & selectors.EVENT_READ:
                    self._pull(conn, sock)
        except OSError:
            self._abort(conn)
            return
        self._progress(conn)

    def _pull(self, conn: _Conn, sock: socket.socket) -> None:
        try:
            data = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if sock is conn.client:
            if data:
                conn.to_upstream += data
            else:
                conn.client_eof = True
        elif data:
            conn.to_client += data
        else:
            conn.upstream_eof = True

    def _flush(self, conn: _Conn, sock: socket.socket) -> None:
        buf = conn.to_client if sock is conn.client else conn.to_upstream
        if not buf:
            return
        try:
            sent = sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        del buf[:sent]

    def _progress(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        try:
            if (
                conn.client_eof
                and not conn.to_upstream
                and not conn.connecting
                and not conn.upstream_shut
            ):
                conn.upstream.shutdown(socket.SHUT_WR)
                conn.upstream_shut = True
            if conn.upstream_eof and not conn.to_client and not conn.client_shut:
                conn.client.shutdown(socket.SHUT_WR)
                conn.client_shut = True
        except OSError:
            self._abort(conn)
            return
        if conn.client_shut and conn.upstream_shut:
            self._finish(conn)
            return
        self._update(conn)

    def _update(self, conn: _Conn) -> None:
        flowing = self._state == "open"
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        client_mask = 0
        upstream_mask = 0
        if conn.connecting:
            upstream_mask = write
        elif flowing:
            if not conn.upstream_eof and len(conn.to_client) < self.buffer_limit:
                upstream_mask |= read
            if conn.to_upstream:
                upstream_mask |= write
        if flowing:
            if not conn.client_eof and len(conn.to_upstream) < self.buffer_limit:
                client_mask |= read
            if conn.to_client:
                client_mask |= write
        self._set_interest(conn.client, client_mask, conn)
        self._set_interest(conn.upstream, upstream_mask, conn)

    def _set_interest(self, sock: socket.socket, mask: int, data: object) -> None:
        selector = self._selector
        assert selector is not None
        current = self._interest.get(sock, 0)
        if mask == current:
            return
        if mask == 0:
            selector.unregister(sock)
            del self._interest[sock]
        elif current == 0:
            selector.register(sock, mask, data)
            self._interest[sock] = mask
        else:
            selector.modify(sock, mask, data)
            self._interest[sock] = mask

    def _forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for sock in (conn.client, conn.upstream):
            if sock in self._interest:
                with contextlib.suppress(Exception):
                    self._set_interest(sock, 0, conn)
                self._interest.pop(sock, None)

    def _abort(self, conn: _Conn) -> None:
        self._forget(conn)
        _reset(conn.client)
        _reset(conn.upstream)

    def _finish(self, conn: _Conn) -> None:
        self._forget(conn)
        for sock in (conn.client, conn.upstream):
            with contextlib.suppress(OSError):
                sock.close()
