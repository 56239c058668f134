"""Media over OpenAI's HTTP API: multipart bodies for uploads, and images read back from b64_json answers."""

from __future__ import annotations

import base64
import io
import secrets
from typing import Any

from ..errors import UpstreamError
from ..protocols.openai.media import ImageResult
from .media_input import image_header


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "modelyard" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        safe = filename.replace('"', "").replace("\r", "").replace("\n", "")
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload_image(data: bytes, name: str) -> tuple[str, bytes]:
    """(file name, bytes) for an image upload: PNG as sent; another format converted to PNG when Pillow is here
    (some OpenAI image models take PNG only), else sent as it is, named by its format (a base install has no Pillow)."""
    head = image_header(data)
    fmt = head[0] if head else "png"
    if fmt == "png":
        return f"{name}.png", data
    try:
        from PIL import Image
    except ImportError:
        return f"{name}.{fmt}", data
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG")
    return f"{name}.png", buf.getvalue()


def images_from(data: dict[str, Any], name: str) -> ImageResult:
    items = data.get("data")
    if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("b64_json") for i in items):
        raise UpstreamError(f"Upstream {name} returned no images.")
    try:
        images = [base64.b64decode(i["b64_json"]) for i in items]
    except (ValueError, TypeError) as exc:
        raise UpstreamError(f"Upstream {name} returned an image that is not base64.") from exc
    return ImageResult(images=images, revised_prompt=items[0].get("revised_prompt"))
