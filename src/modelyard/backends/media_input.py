"""Decoding media that clients send inline (base64, data URLs)."""

from __future__ import annotations

import base64
import binascii
import io
import struct

from ..errors import InvalidRequest

MAX_INLINE_BYTES = 20 * 1024 * 1024


def decode_base64_image(value: str, param: str) -> bytes:
    """Accept plain base64 or a data URL (data:image/png;base64,...)."""
    if value.startswith(("http://", "https://")):
        raise InvalidRequest("Image URLs are not accepted here yet; send the image as base64 or a data URL.", param=param)
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise InvalidRequest("Data URLs must be base64-encoded.", param=param)
    if len(value) > MAX_INLINE_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"The image is larger than {MAX_INLINE_BYTES // (1024 * 1024)} MB.", param=param)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The image is not valid base64.", param=param) from None


MAX_IMAGE_PIXELS = 4096 * 4096
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_header(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a PNG, JPEG, WebP or GIF header, in pure Python: the base install (an upstream-only
    gateway) has no Pillow, and uploads must still be checked before they are forwarded or queued."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return "gif", w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8X":
            return "webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2:i + 4])
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    return None
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", w, h
            if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
                return None
            i += 2 + length
    return None


def check_image(data: bytes, param: str) -> bytes:
    """The uploaded bytes, unchanged, once they are an image we accept (refused with a 400 naming `param` if not)."""
    head = image_header(data)
    if head is None or head[1] == 0 or head[2] == 0:
        raise InvalidRequest("The uploaded file is not an image we can read (PNG, JPEG or WebP).", param=param)
    if head[1] * head[2] > MAX_IMAGE_PIXELS:
        raise InvalidRequest("The image is larger than 4096x4096.", param=param)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # a base install: the header is what we can check; the upstream judges the rest
        return data
    try:  # with Pillow here (the [local] extra), a truncated or corrupt file is refused now, not after queueing
        Image.open(io.BytesIO(data)).load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest("The uploaded file is not an image we can read (PNG, JPEG or WebP).", param=param) from None
    return data
