"""File identity and the decisions a follower makes about it, as pure functions.

A file's content is identified by device, inode and the fingerprint of its first line. The inode
follows a file through a rename (logrotate ``create``); the fingerprint tells a file truncated
and refilled in place (``copytruncate``) or a recycled inode from the content read before.

Identity alone can be fooled: two contents may share their first line (a template without
timestamps, a header), an inode is reused, a file is truncated and regrows past the old offset
between two looks. So an offset is never trusted on identity alone. Every checkpoint carries the
*tail*: a hash of the :data:`TAIL_BYTES` bytes just before its offset (the end of the last line
read). An offset is used only where the file holds those same bytes before it
(:func:`resume_point`), and a follower checks its own tail on every look (content rewritten in
place reads from the start). A copy of a file (``copytruncate``'s copy, a gzip of a rotated
file) resumes from the original's checkpoint only when its bytes prove it.
"""

from __future__ import annotations

import bz2
import enum
import hashlib
import io
import lzma
import os
import re
import zlib
from collections.abc import Callable
from typing import BinaryIO, NamedTuple, Protocol

#: How many leading bytes the fingerprint covers at most (the first line, or this many bytes).
FINGERPRINT_BYTES = 1024
#: How many bytes before an offset its tail hash covers: several fields of the last line read
#: (its time= to the microsecond), so two different contents practically never share one.
TAIL_BYTES = 64
_GZIP_MAGIC = b"\x1f\x8b"


def fingerprint_of(head: bytes, limit: int = FINGERPRINT_BYTES) -> str | None:
    """Fingerprint of a file's first line, from its first bytes.

    ``None`` while the first line is still incomplete (shorter than ``limit`` and without a
    newline): such a file is not read until its first line is complete.
    """
    end = head.find(b"\n", 0, limit)
    if end >= 0:
        head = head[:end + 1]
    elif len(head) >= limit:
        head = head[:limit]
    else:
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def read_fingerprint(fd: int, limit: int = FINGERPRINT_BYTES) -> str | None:
    """The fingerprint of the file open as ``fd`` (reads at offset 0, leaves no position)."""
    return fingerprint_of(os.pread(fd, limit, 0), limit)


class Change(enum.Enum):
    """What happened to a followed file since the last look."""

    NONE = "none"            # same content, maybe grown
    TRUNCATED = "truncated"  # smaller than what was read: copytruncate or `> file`
    REPLACED = "replaced"    # first line differs: truncated and refilled, or inode reused


def classify(read_offset: int, size: int, old_fingerprint: str,
             new_fingerprint: str | None) -> Change:
    """Decide what happened to a file between two looks at it."""
    if size < read_offset:
        return Change.TRUNCATED
    if new_fingerprint is None:
        # The first line is gone (the file is now shorter than one line): truncated.
        return Change.TRUNCATED if size < FINGERPRINT_BYTES else Change.NONE
    if new_fingerprint != old_fingerprint:
        return Change.REPLACED
    return Change.NONE


class Checkpoint(NamedTuple):
    """A recorded read position: where, the tail hash of the bytes before it, and whether it
    was recorded for this very file identity (or for another with the same first line)."""

    offset: int
    tail: str
    exact: bool


def tail_hash(before: bytes) -> str:
    """The tail of an offset, from the bytes before it ('' at offset 0)."""
    if not before:
        return ""
    return hashlib.blake2b(before[-TAIL_BYTES:], digest_size=8).hexdigest()


def read_tail(fd: int, offset: int) -> str:
    """The tail hash of ``offset`` in the file open as ``fd`` ('' if the file is shorter)."""
    if offset <= 0:
        return ""
    start = max(0, offset - TAIL_BYTES)
    data = os.pread(fd, offset - start, start)
    return tail_hash(data) if len(data) == offset - start else "\0short"


def stream_tail(stream: BinaryIO, offset: int) -> str:
    """The tail hash of ``offset`` in a seekable stream (plain or compressed); leaves the stream at
    ``offset`` when it is that long."""
    if offset <= 0:
        stream.seek(0)
        return ""
    start = max(0, offset - TAIL_BYTES)
    stream.seek(start)
    data = stream.read(offset - start)
    return tail_hash(data) if len(data) == offset - start else "\0short"


def proves(checkpoint: Checkpoint, tail: str) -> bool:
    """Whether a file whose bytes before ``checkpoint.offset`` hash to ``tail`` is the content
    the checkpoint was recorded for. A checkpoint written before tails were recorded ('') is
    trusted only for its own file identity."""
    if checkpoint.tail:
        return checkpoint.tail == tail
    return checkpoint.exact


def resume_point(candidates: list[Checkpoint], tail_at: Callable[[int], str], size: int | None
                 ) -> Checkpoint | None:
    """The first candidate the file's bytes prove (candidates come best first), or None."""
    for c in candidates:
        if size is not None and c.offset > size:
            continue
        if proves(c, tail_at(c.offset)):
            return c
    return None


def start_offset(checkpoint: int | None, size: int, *, new_file_at_end: bool) -> int:
    """Where to start reading a file seen for the first time by this process, given the
    proven checkpoint (None when there is none)."""
    if checkpoint is not None and checkpoint <= size:
        return checkpoint
    if checkpoint is None and new_file_at_end:
        return size
    return 0


def is_gzip(head: bytes) -> bool:
    """True when the bytes start like a gzip stream (detected by content, not by name)."""
    return head[:2] == _GZIP_MAGIC


# -- compressed files ----------------------------------------------------------------------

#: Leading bytes that tell the compressed formats apart (bzip2's magic and block header).
MAGIC_BYTES = 10
#: Compressed bytes read from the file at a time.
_RAW_BLOCK = 64 * 1024
#: Content bytes decoded in one call at most: a decoder that finds bad data drops what that
#: call decoded, so this bounds what is lost just before the damage.
_OUT_BLOCK = 16 * 1024
#: Compressed bytes given to the zstd decoder at a time: it has no output limit, and a zstd
#: block of one repeated byte (a NUL hole, say) takes 4 bytes for 128 KiB, so this bounds one
#: call's output to 32 MiB.
_ZSTD_PIECE = 1024
_BZIP2_MAGIC = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")


class _Decoder(Protocol):
    """A streaming decoder of one compressed stream, as :class:`lzma.LZMADecompressor`."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _Gzip:
    """zlib's decoder of one gzip member, with the interface of lzma's."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._z.decompress(self._z.unconsumed_tail + data, max_length)
        self.needs_input = not self._z.unconsumed_tail and len(out) < max_length
        return out

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data


class _Zstd:
    """zstandard's decoder of one frame, with the interface of lzma's."""

    def __init__(self) -> None:
        import zstandard  # only when a zstd file is read

        self._error = zstandard.ZstdError
        self._z = zstandard.ZstdDecompressor().decompressobj(read_across_frames=False)
        self._rest = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        data = self._rest + data if self._rest else data
        self._rest = data[_ZSTD_PIECE:]
        try:
            return self._z.decompress(data[:_ZSTD_PIECE])
        except self._error as exc:
            raise ValueError(str(exc)) from None

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def needs_input(self) -> bool:
        return not self._rest

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data + self._rest


def _is_zstd(head: bytes) -> bool:
    """A zstd frame, or a skippable frame (pzstd starts with one)."""
    return head[:4] == b"\x28\xb5\x2f\xfd" or (
        len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == b"\x2a\x4d\x18")


class Compression(NamedTuple):
    """A compressed format: its name, how its streams start, a decoder of one stream."""

    name: str
    starts: Callable[[bytes], bool]
    decoder: Callable[[], _Decoder]


COMPRESSIONS = (
    Compression("gzip", is_gzip, _Gzip),
    Compression("xz", lambda head: head[:6] == b"\xfd7zXZ\x00",
                lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
    Compression("bzip2", lambda head: _BZIP2_MAGIC.match(head) is not None,
                bz2.BZ2Decompressor),
    Compression("zstd", _is_zstd, _Zstd),
)


def compression_of(head: bytes) -> Compression | None:
    """The format of a file starting with ``head`` (:data:`MAGIC_BYTES` of it), or None for
    plain text."""
    return next((c for c in COMPRESSIONS if c.starts(head)), None)


#: What decoders raise on bad data (bz2: OSError; the zstd adapter: ValueError).
_BAD_DATA = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


class Decompressed(io.BufferedIOBase):
    """The content of a compressed file, read forward (seeking back reads it again).

    Streams may follow each other (``cat a.gz b.gz``, pigz, pzstd); NUL padding after one is
    skipped. Reading never raises: the content ends where the file is damaged (truncated,
    corrupt, unreadable), after everything decoded before, and :attr:`damage` says why.
    Bytes after the last complete stream that start no other are ignored, like ``gzip -d``
    does, and counted in :attr:`trailing`.
    """

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        super().__init__()
        self.raw = raw
        self.compression = compression
        self._rewind()

    def _rewind(self) -> None:
        self.raw.seek(0)
        self._decoder = self.compression.decoder()
        self._input = b""  # read from the file, not given to the decoder yet
        self._output = b""  # decoded past what was asked for (zstd has no output limit) ...
        self._taken = 0  # ... of which this much was returned since
        self._pos = 0
        self._done = False
        #: why the content ends early ('' when it does not)
        self.damage = ""
        #: bytes ignored after the last complete stream
        self.trailing = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (all when negative), fewer only at the end of the content."""
        parts = []
        want = -1 if size is None or size < 0 else size
        while want:
            data = self._decode(_RAW_BLOCK if want < 0 else want)
            if not data:
                break
            parts.append(data)
            want = want if want < 0 else want - len(data)
        return b"".join(parts)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Go to ``offset`` of the content (the end when it is shorter)."""
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute positions")
        if offset < self._pos:
            self._rewind()
        while self._pos < offset and self._decode(min(offset - self._pos, _RAW_BLOCK)):
            pass
        return self._pos

    def _decode(self, size: int) -> bytes:
        """At most ``size`` more bytes of the content; b'' at its end or where it is damaged."""
        if self._taken < len(self._output):
            return self._take(self._output, self._taken, size)
        name = self.compression.name
        while not self._done:
            decoder = self._decoder
            if decoder.eof:
                self._next_stream(decoder.unused_data + self._input)
                continue
            data = b""
            if decoder.needs_input:
                try:
                    data, self._input = self._input or self.raw.read(_RAW_BLOCK), b""
                except OSError as exc:
                    self._stop(f"read error after byte {self._pos} of the content"
                               f" ({exc.strerror or exc})")
                    break
                if not data:
                    self._stop(f"{name} data truncated after byte {self._pos} of the content"
                               " (no end-of-stream marker)")
                    break
            try:
                out = decoder.decompress(data, min(size, _OUT_BLOCK))
            except _BAD_DATA as exc:
                self._stop(f"corrupt {name} data after byte {self._pos} of the content ({exc})")
                break
            if out:
                return self._take(out, 0, size)
        return b""

    def _take(self, output: bytes, start: int, size: int) -> bytes:
        """``size`` bytes of ``output`` from ``start``; the rest is kept for the next call."""
        data = output[start:start + size] if start or len(output) > size else output
        self._output, self._taken = output, start + len(data)
        self._pos += len(data)
        return data

    def _next_stream(self, rest: bytes) -> None:
        """After a complete stream: start the next one, or end the content."""
        while len(rest := rest.lstrip(b"\0")) < MAGIC_BYTES:
            more = self.raw.read(_RAW_BLOCK)
            if not more:
                break
            rest += more
        if rest and self.compression.starts(rest):
            self._decoder = self.compression.decoder()
            self._input = rest
            return
        if rest:
            self.trailing = os.fstat(self.raw.fileno()).st_size - self.raw.tell() + len(rest)
        self._done = True

    def _stop(self, damage: str) -> None:
        self.damage = damage
        self._done = True


def damage_of(stream: object) -> str:
    """Why a stream of :func:`open_stream` ended before its file did ('' when it did not)."""
    return stream.damage if isinstance(stream, Decompressed) else ""


def open_stream(path: str) -> tuple[BinaryIO, BinaryIO]:
    """Open a log for one-shot reading: ``(stream of lines, raw file for progress)``.

    Compression (:data:`COMPRESSIONS`) is recognised by its magic bytes, whatever the file is
    called; the stream is then :class:`Decompressed`.
    """
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes both
    try:
        compression = compression_of(raw.read(MAGIC_BYTES))
        raw.seek(0)
        if compression is not None:
            return Decompressed(raw, compression), raw  # type: ignore[return-value]
    except BaseException:
        raw.close()
        raise
    return raw, raw


def path_text(path: str) -> str:
    """A file name as text for the database, logs and status, losslessly.

    File names are bytes. One that is valid UTF-8 without a backslash is shown as it is;
    otherwise backslashes are doubled and undecodable bytes written as ``\\xNN``, so that
    ``lmod.log-\\xff`` names the file whose last byte is 0xff, and no two names look alike.
    """
    raw = os.fsencode(path)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def split_complete(buf: bytes) -> int:
    """Length of the prefix of ``buf`` that holds complete lines (0 if none)."""
    return buf.rfind(b"\n") + 1
