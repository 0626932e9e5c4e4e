"""The shapes the Redis script speaks (JSON arguments and answers) to and from the pure key model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from app.keys.breaker import CircuitBreaker, CircuitState
from app.keys.learned import announced_windows
from app.keys.model import Ask, Grant, KeyState, KeyStatus, Release
from app.keys.pool import KeyPool
from app.keys.strategies import Weighted
from app.keys.transitions import NEUTRAL_OUTCOMES, SILENT_OUTCOMES

_SCRIPT_STRATEGIES = frozenset({"round_robin", "random", "weighted", "least_busy"})
_STATUS_FIELDS = frozenset(f.name for f in dataclasses.fields(KeyStatus))
# MessagePack and JSON keep 1.0 as 1; the model's floats stay floats.
_FLOAT_FIELDS = frozenset(
    {"health_factor", "tat_requests", "tat_tokens", "cooldown_until", "trial_until"}
    | {"budget_reset_at", "quiet_since", "latency_ewma"}
    | {"learned_requests_window", "learned_tokens_window"}
)


def provider_spec(pool: KeyPool, fields: Sequence[str] | None = None) -> bytes:
    """Everything the script must know about a provider's pool, sent with every call.

    Sending it each time (a few hundred bytes) rather than storing it means instances never act
    on another instance's configuration, and the pacing arithmetic stays in `pacing.Pace`.
    `fields` names each key's record when it is not its index (vault keys, see `KeyLayout`).
    """
    strategy = pool.strategy.name
    if strategy not in _SCRIPT_STRATEGIES:
        raise ValueError(f"the Redis state backend has no {strategy!r} strategy")
    pace = pool.pace
    weights = list(pool.strategy.weights) if isinstance(pool.strategy, Weighted) else []
    spec: dict[str, Any] = {
        "n": len(pool),
        "strategy": strategy,
        "weights": weights,
        "paced": pace.paced,
        "rpm": bool(pace.rpm),
        "tpm": bool(pace.tpm),
        "request_interval": pace.request_interval,
        "request_tolerance": pace.request_tolerance,
        "token_burst": pace.token_burst,
        "token_interval": pace.token_interval,
        "threshold": pool.breaker.threshold,
        "reset": pool.breaker.reset_s,
        # What a key's learned limits are merged with (learned.pace_of), and the detector's
        # mode (shared_limit.py); the configured budgets are absent when unset.
        **({"rpm_value": pace.rpm} if pace.rpm is not None else {}),
        **({"tpm_value": pace.tpm} if pace.tpm is not None else {}),
        "share": pace.share,
        "shared": pool.shared.mode,
        "shared_window": pool.shared.window_s,
    }
    if fields is not None:
        spec["fields"] = list(fields)
    return orjson.dumps(spec)


def ask_args(ask: Ask, draw: float, hint: int | None = None) -> bytes:
    """`draw` is the uniform random number the random and weighted strategies use; `hint` the
    key the caller expects the choice to fall on (its record is read with the provider's)."""
    args: dict[str, Any] = {
        "exclude": sorted(ask.exclude),
        "avoid": {str(i): n for i, n in ask.avoid.items()},
        "tokens": ask.tokens,
        "reserve": ask.reserve,
        "max_wait_s": ask.max_wait_s,
        "max_queue_s": ask.max_queue_s,
        "admit": ask.admit,
        "draw": draw,
    }
    if ask.preferred is not None:
        args["preferred"] = ask.preferred
    if hint is not None:
        args["hint"] = hint
    return orjson.dumps(args)


def grant_from(raw: bytes) -> Grant:
    answer = orjson.loads(raw)
    return Grant(
        answer.get("index"),
        delay_s=answer.get("delay_s", 0.0),
        after_cooldown=answer.get("after_cooldown", False),
        wait_s=answer.get("wait_s"),
        reservable_s=answer.get("reservable_s"),
        refused=answer.get("refused"),
    )


def release_args(done: Release) -> bytes:
    """The outcome arrives classified: the script only applies what `transitions` decided it means."""
    outcome, signal = done.outcome, done.signal
    announced = {
        "retry_after": signal.retry_after_s,
        "remaining": signal.remaining_requests,
        "reset": signal.reset_requests_s,
        "exhausted": signal.exhausted_for_s,
    }
    args: dict[str, Any] = {
        "index": done.index,
        "outcome": outcome.value,
        "key_failure": outcome.is_key_failure,
        "provider_failure": outcome.is_provider_failure,
        "silent": outcome in SILENT_OUTCOMES,
        "neutral": outcome in NEUTRAL_OUTCOMES,
        "signal": {k: v for k, v in announced.items() if v is not None},
    }
    if done.latency_s is not None:
        args["latency"] = done.latency_s
    if outcome.value == "ok":
        learned = announced_windows(signal)
        if learned:
            args["learn"] = learned
    return orjson.dumps(args)


def status_from(record: dict[str, Any]) -> KeyStatus:
    fields = {k: v for k, v in record.items() if k in _STATUS_FIELDS}
    for name in _FLOAT_FIELDS & fields.keys():
        fields[name] = float(fields[name])
    fields["state"] = KeyState(fields.get("state", KeyState.ACTIVE))
    return KeyStatus(**fields)


@dataclasses.dataclass(frozen=True, slots=True)
class SharedPool:
    """One provider's shared state as the script's snapshot reported it."""

    keys: list[KeyStatus]
    breaker: CircuitBreaker
    cursor: int
    latency_ewma: float | None
    shared_limit_until: float | None = None

    def circuit(self, now: float) -> CircuitState:
        return self.breaker.state(now)


def shared_pool_from(raw: bytes, pool: KeyPool) -> SharedPool:
    answer = orjson.loads(raw)
    records = answer.get("keys") or []
    breaker = CircuitBreaker(
        pool.breaker.threshold,
        pool.breaker.reset_s,
        failures=int(answer.get("failures", 0)),
        opened_at=answer.get("opened_at"),
        trial_in_flight=bool(answer.get("trial", False)),
    )
    return SharedPool(
        [status_from(r) for r in records],
        breaker,
        int(answer.get("cursor", 0)),
        answer.get("latency_ewma"),
        answer.get("shared_until"),
    )


def merge_args(pool: KeyPool, now: float) -> bytes | None:
    """What this process spent or learned alone that the shared record must not forget.

    None when there is nothing: a fresh process, or one that was never cut off.
    """
    seen = []
    for index, status in enumerate(pool.statuses):
        cooling = status.state is KeyState.RATE_LIMITED and (status.cooldown_until or 0) > now
        if not cooling and max(status.tat_requests, status.tat_tokens) <= now:
            continue
        entry: dict[str, Any] = {
            "index": index,
            "tat_requests": status.tat_requests,
            "tat_tokens": status.tat_tokens,
            "announced": status.announced,
        }
        if cooling:
            entry["cooldown_until"] = status.cooldown_until
        seen.append(entry)
    return orjson.dumps({"keys": seen}) if seen else None
