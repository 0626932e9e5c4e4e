"""Applying a provider's new key list to everything that serves it, in one synchronous step.

The key vault adds and deletes keys while requests run. The directory (routing, fallback,
prober, health), the client cache and the key state store must change together: between two
awaits nothing may see one of them new and another old. The step runs on the event loop
without awaiting, so it is atomic for every request of this process.
"""

from __future__ import annotations

from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.config import ProviderConfig
from app.state.base import KeyLayout, ResizableStore


class LiveKeys:
    def __init__(
        self, directory: ProviderDirectory, clients: ClientCache, store: ResizableStore
    ) -> None:
        self.directory = directory
        self.clients = clients
        self.store = store

    def apply(self, config: ProviderConfig, layout: KeyLayout) -> None:
        """`config` holds the provider's keys now; `layout` says where each came from."""
        self.store.resize(config.name, layout)
        self.clients.rebuild(config)
        self.directory.replace(config, layout.moved_from)
