"""A ZIP archive written as it streams: stored entries (photos are compressed already) with data descriptors.

Each entry's CRC and size are only known once its bytes have passed, so they follow the bytes (general purpose
flag bit 3) and are repeated in the central directory at the end. Nothing but one entry record per file is kept.
Offsets are 32-bit (no ZIP64), so an archive stays under MAX_ARCHIVE_BYTES; callers check sizes first.
"""

import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

MAX_ARCHIVE_BYTES = 0xFFFFFFFF - 64 * 1024 * 1024
MAX_ENTRIES = 0xFFFF
_FLAGS = 0x0008 | 0x0800  # sizes in a data descriptor; names in UTF-8
_VERSION = 20
_STORED = 0


@dataclass
class _Entry:
    name: bytes
    offset: int
    dos_time: int
    dos_date: int
    crc: int = 0
    size: int = 0


def dos_datetime(moment: datetime) -> tuple[int, int]:
    """ZIP's MS-DOS time and date; years before 1980 (the format's epoch) become 1980."""
    year = max(1980, min(2107, moment.year))
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return time, ((year - 1980) << 9) | (moment.month << 5) | moment.day


class ZipStream:
    """Produces the archive's bytes in order: header, data and descriptor per entry, then the directory."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._offset = 0

    async def entry(self, name: str, modified: datetime, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if len(self._entries) >= MAX_ENTRIES:
            raise ValueError(f"an archive holds at most {MAX_ENTRIES} files")
        entry = _Entry(name.encode(), self._offset, *dos_datetime(modified))
        yield self._emit(self._local_header(entry))
        async for chunk in chunks:
            entry.crc = zlib.crc32(chunk, entry.crc)
            entry.size += len(chunk)
            yield self._emit(chunk)
        yield self._emit(struct.pack("<4sIII", b"PK\x07\x08", entry.crc, entry.size, entry.size))
        self._entries.append(entry)

    def end(self) -> bytes:
        start = self._offset
        directory = b"".join(self._central_record(entry) for entry in self._entries)
        count = len(self._entries)
        tail = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(directory), start, 0)
        return self._emit(directory + tail)

    def _emit(self, data: bytes) -> bytes:
        self._offset += len(data)
        if self._offset > 0xFFFFFFFF:
            raise ValueError("the archive grew past 4 GiB, which needs ZIP64")
        return data

    @staticmethod
    def _local_header(entry: _Entry) -> bytes:
        fixed = struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", _VERSION, _FLAGS, _STORED, entry.dos_time, entry.dos_date, 0, 0, 0,
            len(entry.name), 0,
        )  # fmt: skip
        return fixed + entry.name

    @staticmethod
    def _central_record(entry: _Entry) -> bytes:
        fixed = struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", _VERSION, _VERSION, _FLAGS, _STORED, entry.dos_time, entry.dos_date,
            entry.crc, entry.size, entry.size, len(entry.name), 0, 0, 0, 0, 0o100644 << 16, entry.offset,
        )  # fmt: skip
        return fixed + entry.name


def unique_names(names: list[str]) -> list[str]:
    """The names, with " (2)", " (3)"… before the extension of repeats, so no entry hides another."""
    seen: set[str] = set()
    result = []
    for name in names:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem:
            stem, dot, extension = name, "", ""
        candidate, number = name, 1
        while candidate.lower() in seen:
            number += 1
            candidate = f"{stem} ({number}){dot}{extension}"
        seen.add(candidate.lower())
        result.append(candidate)
    return result
