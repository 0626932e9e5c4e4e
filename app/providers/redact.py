"""Take a provider key, or any long leading part of it, out of text an upstream sent back."""

from __future__ import annotations

MIN_PREFIX = 8  # shorter runs ("sk-proj-") are common to every key and identify nothing
MAX_MESSAGE_CHARS = 500  # what a client is shown of an upstream error message


def redact_key(text: str, secret: str, replacement: str, min_prefix: int = MIN_PREFIX) -> str:
    """Replace every run of `text` that is `secret` or a prefix of it of ≥ `min_prefix` chars.

    A cut (ours or the upstream's own "sk-abc…") can leave a prefix: it is as good as half the key.
    """
    if len(secret) < min_prefix:
        return text.replace(secret, replacement) if secret else text
    head = secret[:min_prefix]
    out: list[str] = []
    start = 0
    found = text.find(head)
    while found != -1:
        end = found + min_prefix
        while end < len(text) and end - found < len(secret) and text[end] == secret[end - found]:
            end += 1
        out.append(text[start:found])
        out.append(replacement)
        start = end
        found = text.find(head, end)
    out.append(text[start:])
    return "".join(out)


def client_message(text: str, secret: str, replacement: str) -> str:
    """Redact first, then cut: cutting first could leave a prefix no exact match would find."""
    return redact_key(text, secret, replacement)[:MAX_MESSAGE_CHARS]
