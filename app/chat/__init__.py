"""The chat service: Path A / Path B routing, key fallback, first-chunk stream commit."""
