"""Decoding media that clients send inline (base64, data URLs)."""

from __future__ import annotations

import base64
import binascii

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
