"""A streaming multipart/form-data body for several items, with a checksum part after each file."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from ._items import UploadItem

__all__ = ["MultipartBody"]


def _quote(value: str) -> str:
    # The HTML form rules for names in Content-Disposition: no bare quotes or newlines.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """multipart/form-data streamed from the items, with an exact Content-Length.

    Each item is a file part named ``field``; with ``checksum_field``, a text
    part of that name follows it, holding the hex SHA-256 of the bytes just
    sent (computed while they stream: one read of each file). Text fields
    from ``data`` come first.

    Args:
        items: The items, in order.
        sizes: Each item's size in bytes (from `UploadItem.size`).
        field: The file parts' name.
        checksum_field: The checksum parts' name, or None for none.
        data: Extra text fields.
        chunk_size_bytes: The most read from a file at once.
        sent: Called with the length of each content chunk streamed.
    """

    def __init__(
        self,
        items: Sequence[UploadItem],
        sizes: Sequence[int],
        *,
        field: str = "file",
        checksum_field: str | None = "sha256",
        data: Mapping[str, str] | None = None,
        chunk_size_bytes: int = 256 * 1024,
        sent: Callable[[int], None] | None = None,
    ) -> None:
        if len(items) != len(sizes):
            raise ValueError("items and sizes must have the same length")
        self._items = list(items)
        self._sizes = list(sizes)
        self._field = field
        self._checksum_field = checksum_field
        self._data = dict(data or {})
        self._chunk = chunk_size_bytes
        self._sent = sent
        self.boundary = secrets.token_hex(16)

    @property
    def content_type(self) -> str:
        """The Content-Type header's value."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _field_head(self, name: str) -> bytes:
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()

    def _file_head(self, item: UploadItem) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(self._field)}"; '
            f'filename="{_quote(item.filename)}"\r\n'
            f"Content-Type: {item.content_type}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        n = sum(len(self._field_head(k)) + len(v.encode()) + 2 for k, v in self._data.items())
        for item, size in zip(self._items, self._sizes, strict=True):
            n += len(self._file_head(item)) + size + 2
            if self._checksum_field is not None:
                n += len(self._field_head(self._checksum_field)) + 64 + 2
        return n + len(self._tail())

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type and Content-Length for the request."""
        return {"Content-Type": self.content_type, "Content-Length": str(len(self))}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for name, value in self._data.items():
            yield self._field_head(name) + value.encode() + b"\r\n"
        for item, size in zip(self._items, self._sizes, strict=True):
            yield self._file_head(item)
            digest = hashlib.sha256()
            async for chunk in item.aiter_bytes(size=size, chunk_size_bytes=self._chunk, sent=self._sent):
                digest.update(chunk)
                yield chunk
            yield b"\r\n"
            if self._checksum_field is not None:
                yield self._field_head(self._checksum_field) + digest.hexdigest().encode() + b"\r\n"
        yield self._tail()
