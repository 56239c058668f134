"""Share links: a random token (only its sha256 kept), a keyless read of the item, media served while it lives."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from ..config import LimitRuleConfig, PlanConfig, Settings
from ..errors import NotFound, RateLimited
from ..media import MediaForbidden, StoredMedia
from ..pipeline.auth import Principal
from ..pipeline.limits import Limiter
from ..storage.base import MEDIA_PREFIX
from .repo import Share

if TYPE_CHECKING:
    from .items import Item
    from .service import LibraryService

PLAN = "shares"  # the limiter's one plan: keyless share reads, counted per client address
MAX_EXPIRY = 365 * 24 * 3600


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Shares:
    """A share lives until it is revoked, replaced, its item deleted, or its `expires_at` passes. Its media are
    served by /api/shares/{token}/media/{n}, which checks the share on every read: no link handed out through a share
    outlives it (a signed /media link would, for its whole TTL)."""

    def __init__(self, library: LibraryService, settings: Settings) -> None:
        self.library = library
        self.repo = library.repo
        self.signer = library.ctx.storage.signer
        self.ttl = settings.media_url_ttl
        rule = LimitRuleConfig(scope="org", class_="all", window="minute", count=settings.share_requests_per_minute)
        self.limiter = Limiter({PLAN: PlanConfig(limits=[rule])}, settings.redis_url,
                               settings.redis_key_prefix + "shares:", clock=lambda: library.clock())

    async def admit(self, address: str) -> dict[str, str]:
        """One keyless read from `address`; 429 past the per-address rate."""
        try:
            headers, _ = await self.limiter.admit(PLAN, address, address, "api", None)
        except RateLimited as exc:
            raise RateLimited("Too many share link reads from your address; retry after the window resets.",
                              retry_after=exc.retry_after, headers=exc.headers) from None
        return headers

    async def aclose(self) -> None:
        await self.limiter.aclose()

    # ---------------------------------------------------------------- the owner's side

    async def create(self, principal: Principal, item_id: str, expires_in: int | None, base_url: str) -> dict[str, Any]:
        """A new link (any earlier one stops working); the token is shown here once and never again."""
        item = await self.library.get(principal, item_id)
        token = secrets.token_urlsafe(32)  # 256 random bits
        now = self.library.clock()
        share = Share(item.id, principal.org_id, hash_token(token), now, now + expires_in if expires_in else None)
        await self.repo.put_share(share)
        return {**self.describe(share), "token": token, "url": f"{base_url.rstrip('/')}/api/shares/{token}"}

    async def get(self, principal: Principal, item_id: str) -> dict[str, Any]:
        await self.library.get(principal, item_id)
        share = await self.repo.get_share(principal.org_id, item_id)
        if share is None or self._expired(share):
            raise NotFound(f"Library item '{item_id}' has no live share link.", code="share_not_found")
        return self.describe(share)

    async def revoke(self, principal: Principal, item_id: str) -> dict[str, Any]:
        await self.library.get(principal, item_id)
        if not await self.repo.delete_share(principal.org_id, item_id):
            raise NotFound(f"Library item '{item_id}' has no share link.", code="share_not_found")
        return {"object": "library.share", "item_id": item_id, "deleted": True}

    @staticmethod
    def describe(share: Share) -> dict[str, Any]:
        """What the owner may read back: not the token (only its hash is kept)."""
        return {"object": "library.share", "item_id": share.item_id, "created_at": int(share.created_at),
                "expires_at": int(share.expires_at) if share.expires_at is not None else None}

    def _expired(self, share: Share) -> bool:
        return share.expires_at is not None and share.expires_at <= self.library.clock()

    # ---------------------------------------------------------------- keyless

    async def _live(self, token: str) -> tuple[Share, Item, bool]:
        found = await self.repo.by_token(hash_token(token)) if 16 <= len(token) <= 128 else None
        if found is None or self._expired(found[0]):  # revoked, expired and unknown read the same
            raise NotFound("This share link does not exist or has expired.", code="share_not_found")
        return found

    async def fetch(self, token: str, base_url: str) -> dict[str, Any]:
        """The item's public fields; media links that work only while the share does (and never past `ttl`)."""
        share, item, private = await self._live(token)
        expires = int(self.library.clock()) + self.ttl
        if share.expires_at is not None:
            expires = min(expires, int(share.expires_at))
        base = f"{base_url.rstrip('/')}/api/shares/{token}/media"
        media = [{"url": f"{base}/{i}?expires={expires}&sig={self._sign(share, i, expires)}",
                  "content_type": m.content_type, "bytes": m.bytes, "width": m.width, "height": m.height,
                  "duration_seconds": m.duration_seconds} for i, m in enumerate(item.media)]
        body = {**self.library.fields(item), "object": "library.shared_item", "urls": [m["url"] for m in media],
                "media": media, "expires_at": int(share.expires_at) if share.expires_at is not None else None}
        if not private:
            body["prompt"] = item.prompt
            body["params"] = item.params
        return body

    async def media(self, token: str, index: int, expires: str | None, sig: str | None) -> StoredMedia:
        """The n-th media of a live share, if the link's signature and expiry hold."""
        share, item, _ = await self._live(token)
        if not (0 <= index < len(item.media)):
            raise NotFound("This shared item has no such media.", code="media_not_found")
        if not expires or not expires.isdigit() or not sig or not self.signer.valid(
                f"share:{share.token_hash}:{index}", int(expires), sig):
            raise MediaForbidden("This media URL's signature does not match.")
        if int(expires) < self.library.clock():
            raise MediaForbidden("This media URL has expired.", code="url_expired")
        m = item.media[index]
        return StoredMedia(m.name, MEDIA_PREFIX + m.name, m.content_type)

    def _sign(self, share: Share, index: int, expires: int) -> str:
        return self.signer.sign(f"share:{share.token_hash}:{index}", expires)
