"""keypool's own fake OpenAI-compatible provider: a real HTTP server with per-key fault modes."""

from app.demo.fake.config import (
    FakeProviderConfig,
    KeyBehaviour,
    Mode,
    config_from_dict,
    demo_config,
)
from app.demo.fake.runner import (
    FakeProvider,
    FakeProviderThread,
    run_fake_provider,
    start_fake_provider,
)

__all__ = [
    "FakeProvider",
    "FakeProviderConfig",
    "FakeProviderThread",
    "KeyBehaviour",
    "Mode",
    "config_from_dict",
    "demo_config",
    "run_fake_provider",
    "start_fake_provider",
]
