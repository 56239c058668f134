"""Where the client wants its data processed: by the host it called (configured), else the X-Region header."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..errors import InvalidRequest


def region_for(conn: HTTPConnection, region_hosts: dict[str, str]) -> str | None:
    if region_hosts:
        host = conn.headers.get("host", "").rsplit(":", 1)[0].lower()
        if host in region_hosts:
            return region_hosts[host].lower()
    header = conn.headers.get("x-region")
    if header is None or not header.strip():
        return None
    region = header.strip().lower()
    if len(region) > 64 or not region.replace("-", "").replace("_", "").isalnum():
        raise InvalidRequest("The X-Region header must be a region name such as 'eu' or 'us-east'.", param="X-Region")
    return region
