"""The one builder of the chat layer, shared by the server's lifespan and the script API.

Built from below: transport, then clients, prober and service, each handed what it needs in
its constructor. Must run on the event loop that will serve (aiohttp sessions bind to it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.chat.observing import ChatObserver
from app.chat.pools import OwnPools, PoolResolver, SharedPools, WithOwnKeys
from app.chat.recovery import KeyProber
from app.chat.service import ChatService
from app.chat.usage import GroupResolver, Pricing
from app.config import Settings
from app.keys.backoff import WaitPolicy
from app.providers.transport import AiohttpTransport, Transport
from app.state.base import KeyStateStore
from app.usage import UsageSink


@dataclass(frozen=True, slots=True)
class ChatParts:
    transport: AiohttpTransport
    service: ChatService
    prober: KeyProber
    directory: ProviderDirectory  # the live key lists (`chat.live.LiveKeys` changes them)
    clients: ClientCache


def build_chat(
    settings: Settings,
    store: KeyStateStore,
    *,
    sink: UsageSink | None = None,
    groups: GroupResolver | None = None,
    own_keys: Callable[[Transport], OwnPools] | None = None,
    observer: ChatObserver | None = None,
    prices: Pricing | None = None,
) -> ChatParts:
    """Transport, clients, prober and service; the prober is built but not started.

    `own_keys` (the key vault's users' own keys) builds the private pools on the transport.
    `observer` (the observability hub) sees every settled attempt and every provider found
    without a usable key.
    """
    transport = AiohttpTransport()
    for provider in settings.providers:
        transport.open_session(provider.base_url)
    clients = ClientCache(settings.providers, transport)
    directory = ProviderDirectory(settings.providers)
    pools: PoolResolver = (
        SharedPools(directory, store, clients)
        if own_keys is None
        else WithOwnKeys(directory, store, clients, own_keys(transport))
    )
    prober = KeyProber(
        directory,
        store,
        clients,
        interval_s=settings.probe_interval_s,
        min_active_keys=settings.min_active_keys,
    )
    service = ChatService(
        directory,
        clients,
        store,
        sink=sink,
        groups=groups,
        group_count=settings.groups,
        rotate_providers=settings.provider_rotation == "round_robin",
        policy=WaitPolicy(
            deadline_s=settings.request_deadline_s, queue_s=settings.pacing_max_wait_s
        ),
        on_key_failure=prober.nudge,
        model_groups=settings.groups_by_name,
        tier_weights=settings.tier_weight_map,
        fair_queueing=settings.fair_queueing,
        pools=pools,
        observer=observer,
        prices=prices,
    )
    service.bind_loop(asyncio.get_running_loop())
    return ChatParts(transport, service, prober, directory, clients)
