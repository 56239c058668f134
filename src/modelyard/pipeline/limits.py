"""Rate limits: plan rules counted in fixed windows, in memory or in Redis (one atomic Lua script for all replicas)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..config import LimitRuleConfig, PlanConfig
from ..errors import RateLimited

log = logging.getLogger(__name__)
WINDOW_SECONDS = {"second": 1, "minute": 60}
UNLIMITED = "unlimited"
REDIS_RETRY_SECONDS = 5.0


def _rule(scope: str, count: int, cls: str = "all", kind: str | None = None, window: str = "minute",
          unit: str = "requests") -> LimitRuleConfig:
    return LimitRuleConfig(scope=scope, class_=cls, kind=kind, window=window, count=count, unit=unit)  # type: ignore[arg-type]


def default_plans() -> dict[str, PlanConfig]:
    """The seeds' plans: per-key chat/images RPM (gateway docs), per-org API/job RPM (the job API's reference), 5 req/s (the studio API).

    Standard has no org row in the seeds; it gets pro's org limits, so a paying account is never below free.
    """
    def org(api: int, job: int) -> list[LimitRuleConfig]:
        return [_rule("org", api, "api"), _rule("org", job, "job")]
    return {
        "free": PlanConfig(description="for evaluation", limits=[
            _rule("token", 10, kind="chat"), _rule("token", 5, kind="images"), *org(60, 10)]),
        "standard": PlanConfig(description="default for paying accounts", limits=[
            _rule("token", 60, kind="chat"), _rule("token", 20, kind="images"), *org(600, 100)]),
        "pro": PlanConfig(description="higher throughput", limits=[
            _rule("token", 300, kind="chat"), _rule("token", 60, kind="images"), *org(600, 100)]),
        "enterprise": PlanConfig(description="custom per-key limits", limits=org(6000, 1000)),
        "studio": PlanConfig(description="5 requests per second per key (the studio API's rule)", limits=[
            _rule("token", 5, window="second"), *org(600, 100)]),
        UNLIMITED: PlanConfig(description="the operator's own organization: no limits"),
    }


@dataclass(frozen=True, slots=True)
class Rule:
    id: str  # names the counter; stable while the config is
    plan: str
    scope: str
    cls: str
    kind: str | None
    seconds: int
    count: int
    unit: str

    def describe(self) -> str:
        window = "second" if self.seconds == 1 else "minute"
        return f"{self.count} {self.unit} per {window} per {'API key' if self.scope == 'token' else 'organization'}"


def build_rules(configured: dict[str, PlanConfig]) -> dict[str, tuple[Rule, ...]]:
    plans = {**default_plans(), **configured}
    return {name: tuple(Rule(id=f"{name}.{i}", plan=name, scope=r.scope, cls=r.class_, kind=r.kind,
                             seconds=WINDOW_SECONDS[r.window], count=r.count, unit=r.unit)
                        for i, r in enumerate(plan.limits))
            for name, plan in plans.items()}


class MemoryCounters:
    """Fixed-window counters for one process. The event loop is single-threaded, so check-then-add is atomic."""

    def __init__(self) -> None:
        self._counts: dict[str, list[float]] = {}  # key -> [count, expires_at]
        self._next_prune = 0.0

    def take(self, keys: list[str], limits: list[int], amounts: list[int], ttls: list[int],
             now: float) -> tuple[int, list[int]]:
        """(0, counts after) when every counter has room, else (1-based index of the first full one, its count)."""
        counts = self._counts
        current = []
        for i, key in enumerate(keys):
            c = counts.get(key)
            used = int(c[0]) if c is not None and c[1] > now else 0
            if used + max(amounts[i], 1) > limits[i]:
                return i + 1, [used]
            current.append(used)
        for i, key in enumerate(keys):
            c = counts.get(key)
            if c is None or c[1] <= now:
                counts[key] = [current[i] + amounts[i], now + ttls[i]]
            else:
                c[0] += amounts[i]
            current[i] += amounts[i]
        if now >= self._next_prune:
            self._prune(now)
        return 0, current

    def adjust(self, key: str, delta: int, now: float) -> None:
        c = self._counts.get(key)
        if c is not None and c[1] > now:
            c[0] = max(0, c[0] + delta)

    def _prune(self, now: float) -> None:
        self._next_prune = now + 60
        for key in [k for k, c in self._counts.items() if c[1] <= now]:
            del self._counts[key]


# KEYS: counters; ARGV: limit, amount, ttl per key. Checks every counter first, so a refusal counts nowhere.
_TAKE_LUA = """
local n = #KEYS
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local amount = tonumber(ARGV[3*i-1])
  local need = amount
  if need < 1 then need = 1 end
  if cur + need > tonumber(ARGV[3*i-2]) then return {i, cur} end
end
local out = {0}
for i = 1, n do
  local v = redis.call('INCRBY', KEYS[i], tonumber(ARGV[3*i-1]))
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3*i])) end
  out[i+1] = v
end
return out
"""
_ADJUST_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1])) end
return 0
"""


class RedisCounters:
    """The same counters in Redis, shared by every replica; a short socket timeout keeps a dead Redis cheap."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self.client.register_script(_TAKE_LUA)
        self._adjust = self.client.register_script(_ADJUST_LUA)

    async def take(self, keys: list[str], limits: list[int], amounts: list[int], ttls: list[int],
                   now: float) -> tuple[int, list[int]]:
        args: list[int] = []
        for limit, amount, ttl in zip(limits, amounts, ttls):
            args += [limit, amount, ttl + 1]
        out = await self._take(keys=[self.prefix + k for k in keys], args=args)
        return int(out[0]), [int(v) for v in out[1:]]

    async def adjust(self, key: str, delta: int) -> None:
        await self._adjust(keys=[self.prefix + key], args=[delta])

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(slots=True)
class Taken:
    """What admission counted, so settlement can correct token estimates to the real usage."""

    keys: list[str]
    rules: tuple[Rule, ...]
    amounts: list[int]


class Limiter:
    """Applies a plan's rules to one call; Redis when configured, local counters while Redis is unreachable."""

    def __init__(self, plans: dict[str, PlanConfig], redis_url: str | None = None, prefix: str = "modelyard:",
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = build_rules(plans)
        self.clock = clock  # windows are read from it (tests pass one they move)
        self.local = MemoryCounters()
        self.remote = RedisCounters(redis_url, prefix + "rl:") if redis_url else None
        self.degraded: str | None = None  # why Redis is not in use right now
        self._retry_at = 0.0
        self._applicable: dict[tuple[str, str, str | None], tuple[Rule, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def known(self, plan: str) -> bool:
        return plan in self.rules

    def applicable(self, plan: str, cls: str, kind: str | None) -> tuple[Rule, ...]:
        key = (plan, cls, kind)
        found = self._applicable.get(key)
        if found is None:
            rules = self.rules.get(plan)
            if rules is None:  # a plan renamed out of the config: hold it to free's limits, never to none
                log.warning("organization plan '%s' is not configured; applying the free plan's limits", plan)
                rules = self.rules.get("free", ())
            found = tuple(r for r in rules if r.cls in ("all", cls) and (r.kind is None or r.kind == kind))
            self._applicable[key] = found
        return found

    async def admit_work(self, plan: str, org_id: str, token_id: str, cls: str, kind: str | None,
                         tokens: int = 0) -> tuple[dict[str, str], Taken | None]:
        """Like `admit`, for work whose submission was counted already (an agent run's nodes): the rules of its
        kind (chat, images …) and token rules apply, the class's plain request count does not."""
        return await self.admit(plan, org_id, token_id, cls, kind, tokens, requests=False)

    async def admit(self, plan: str, org_id: str, token_id: str, cls: str, kind: str | None,
                    tokens: int = 0, *, requests: bool = True) -> tuple[dict[str, str], Taken | None]:
        """Count one call against every rule that applies; raise RateLimited when any is full. Returns headers."""
        rules = self.applicable(plan, cls, kind)
        if not requests:
            rules = tuple(r for r in rules if r.unit != "requests" or r.kind is not None)
        if not rules:
            return {}, None
        now = self.clock()
        keys, limits, amounts, ttls = [], [], [], []
        for r in rules:
            window = int(now // r.seconds)
            keys.append(f"{r.id}:{org_id if r.scope == 'org' else token_id}:{window}")
            limits.append(r.count)
            amounts.append(1 if r.unit == "requests" else tokens)
            ttls.append(r.seconds)
        refused, counts = await self._take(keys, limits, amounts, ttls, now)
        if refused:
            rule = rules[refused - 1]
            reset = (int(now // rule.seconds) + 1) * rule.seconds
            suffix = "Requests" if rule.unit == "requests" else "Tokens"
            raise RateLimited(
                f"Rate limit reached: {rule.describe()} on the '{plan}' plan. Retry after the window resets.",
                retry_after=max(reset - now, 0.001),
                headers={f"X-RateLimit-Limit-{suffix}": str(rule.count), f"X-RateLimit-Remaining-{suffix}": "0",
                         f"X-RateLimit-Reset-{suffix}": str(reset)})
        return _headers(rules, counts, now), Taken(keys, rules, amounts)

    def correct(self, taken: Taken, real_tokens: int) -> None:
        """Token rules reserved an estimate; move their counters to the real usage (off the request path)."""
        now = self.clock()
        for key, rule, amount in zip(taken.keys, taken.rules, taken.amounts):
            if rule.unit != "tokens" or real_tokens == amount:
                continue
            if self.remote is not None and self.degraded is None:
                task = asyncio.get_running_loop().create_task(self._adjust_remote(key, real_tokens - amount))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self.local.adjust(key, real_tokens - amount, now)

    async def _adjust_remote(self, key: str, delta: int) -> None:
        try:
            await self.remote.adjust(key, delta)  # type: ignore[union-attr]
        except Exception as exc:  # a lost correction only loosens one window's token count
            log.warning("could not correct a token counter in Redis: %s", exc)

    async def _take(self, keys: list[str], limits: list[int], amounts: list[int], ttls: list[int],
                    now: float) -> tuple[int, list[int]]:
        if self.remote is not None and (self.degraded is None or now >= self._retry_at):
            try:
                result = await self.remote.take(keys, limits, amounts, ttls, now)
            except Exception as exc:  # any Redis failure: keep serving on local counters, and say so
                if self.degraded is None:
                    log.error("Redis rate limiter unreachable (%s: %s); using this process's own limits",
                              type(exc).__name__, exc)
                self.degraded = f"{type(exc).__name__}: {exc}"[:200]
                self._retry_at = now + REDIS_RETRY_SECONDS
            else:
                if self.degraded is not None:
                    log.warning("Redis rate limiter is back; limits are shared again")
                    self.degraded = None
                return result
        return self.local.take(keys, limits, amounts, ttls, now)

    def describe(self) -> dict[str, Any]:
        if self.remote is None:
            return {"backend": "memory", "status": "ok"}
        if self.degraded:
            return {"backend": "redis", "status": "degraded", "detail": "Redis unreachable; each replica is "
                    f"counting its own limits ({self.degraded})"}
        return {"backend": "redis", "status": "ok"}

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.remote is not None:
            await self.remote.aclose()


def _headers(rules: tuple[Rule, ...], counts: list[int], now: float) -> dict[str, str]:
    """OpenAI's headers for the tightest request rule (and token rule, when one applied)."""
    out: dict[str, str] = {}
    for unit, suffix in (("requests", "Requests"), ("tokens", "Tokens")):
        best = None
        for rule, used in zip(rules, counts):
            if rule.unit == unit and (best is None or rule.count - used < best[0].count - best[1]):
                best = (rule, used)
        if best is not None:
            rule, used = best
            out[f"X-RateLimit-Limit-{suffix}"] = str(rule.count)
            out[f"X-RateLimit-Remaining-{suffix}"] = str(max(rule.count - used, 0))
            out[f"X-RateLimit-Reset-{suffix}"] = str((int(now // rule.seconds) + 1) * rule.seconds)
    return out
