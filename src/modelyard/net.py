"""Outbound URLs fetched for a client (webhooks, image URLs): refuse loopback, private and link-local targets.

The check happens in the resolver the HTTP client connects through, so the address vetted is the address
connected to (a DNS answer that changes between check and connect cannot sneak a private address in).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from .errors import InvalidRequest


class BlockedURL(InvalidRequest):
    code = "url_not_allowed"


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are the IPv4 target


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: 6to4 (2002::/16), Teredo (2001::/32, server and client), NAT64."""
    found = [v4 for v4 in (ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(_forbidden(v4) for v4 in _embedded_ipv4(ip)):  # 2002:7f00:1::1 is 127.0.0.1 by another name
            return True
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def check_syntax(url: str, param: str) -> None:
    """Cheap checks done at submit time: a client hears about a bad URL before anything is queued."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # "http://[::1/x": an unclosed IPv6 bracket
        raise InvalidRequest(f"'{param}' is not a valid URL.", param=param) from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest(f"'{param}' must be an http(s) URL.", param=param)
    if len(url) > 2000:
        raise InvalidRequest(f"'{param}' is longer than 2000 characters.", param=param)
    _check_host(host, param)


def _check_host(host: str, param: str) -> None:
    """A host name the resolver can encode: empty labels ("a..b") and labels over 63 characters are not names."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        host.encode("idna")
    except (UnicodeError, ValueError):
        raise InvalidRequest(f"The host in '{param}' is not a valid host name.", param=param,
                             code="url_invalid_host") from None


async def check_url(url: str, param: str, *, allow_private: bool) -> None:
    """Resolve now and refuse private targets (the resolver refuses them again at connect time)."""
    check_syntax(url, param)
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        await GuardedResolver(allow_private=False, param=param).resolve(host, 0)
    except BlockedURL:
        raise
    except (OSError, UnicodeError, ValueError):  # getaddrinfo's IDNA step raises UnicodeError on odd names
        raise InvalidRequest(f"The host in '{param}' does not resolve.", param=param, code="url_unresolvable") from None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops every address outside the public internet (unless the operator allows them)."""

    def __init__(self, *, allow_private: bool, param: str = "url") -> None:
        self.allow_private = allow_private
        self.param = param
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[dict[str, Any]]:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            infos = [{"hostname": host, "host": str(literal), "port": port, "proto": 0, "flags": 0,
                      "family": socket.AF_INET6 if literal.version == 6 else socket.AF_INET}]
        else:
            infos = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return infos
        allowed = [i for i in infos if not _forbidden(ipaddress.ip_address(i["host"]))]
        if not allowed:
            raise BlockedURL(f"'{self.param}' points at a loopback, private or link-local address, which this server "
                             f"does not call.", param=self.param)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(  # callers check_url first: aiohttp connects to IP literals without asking the resolver
*, allow_private: bool, timeout: float, param: str = "url") -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private, param=param),
                                     use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


async def fetch_bytes(url: str, param: str, *, allow_private: bool, limit: int, timeout: float = 30.0) -> bytes:
    """GET a client-named URL (an input image), no redirects to elsewhere-unchecked, at most `limit` bytes."""
    await check_url(url, param, allow_private=allow_private)  # IP literals never reach a resolver: checked here
    try:
        async with guarded_session(allow_private=allow_private, timeout=timeout, param=param) as session:
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise InvalidRequest(f"Fetching '{param}' answered HTTP {resp.status}.", param=param,
                                         code="url_fetch_failed")
                if (resp.content_length or 0) > limit:
                    raise InvalidRequest(f"'{param}' is larger than {limit} bytes.", param=param)
                data = bytearray()  # read(n) answers what is buffered, not n bytes: read to the end, bounded
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise InvalidRequest(f"'{param}' is larger than {limit} bytes.", param=param)
    except (aiohttp.ClientError, TimeoutError) as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, BlockedURL):
            raise cause from None
        raise InvalidRequest(f"Could not fetch '{param}': {str(exc) or 'timed out'}", param=param,
                             code="url_fetch_failed") from None
    return bytes(data)
