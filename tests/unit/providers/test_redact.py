"""An upstream error that echoes the key never gives back the key, whole or in part."""

from __future__ import annotations

import orjson
import pytest

from app.providers import errors as up
from app.providers.redact import MAX_MESSAGE_CHARS, redact_key
from tests.unit.providers.test_client import PARAMS, SECRET, Reply, client_for

FP = "alpha:0:WXYZ"


@pytest.mark.parametrize("pad", range(MAX_MESSAGE_CHARS - len(SECRET), MAX_MESSAGE_CHARS))
async def test_a_key_straddling_the_cut_comes_back_as_its_fingerprint(pad: int) -> None:
    message = "x" * pad + f"Bearer {SECRET}"[7:] + " was refused"
    body = orjson.dumps({"error": {"message": message}})
    client, _ = client_for(lambda sent: Reply(400, body))
    with pytest.raises(up.UpstreamRejected) as caught:
        await client.complete(PARAMS)
    shown = caught.value.upstream_message or ""
    assert len(shown) <= MAX_MESSAGE_CHARS
    assert SECRET[:8] not in shown


class TestRedactKey:
    def test_the_whole_key_and_long_prefixes_are_replaced(self) -> None:
        text = f"a {SECRET} b {SECRET[:12]}… c {SECRET[:8]}"
        assert redact_key(text, SECRET, FP) == f"a {FP} b {FP}… c {FP}"

    def test_short_runs_shared_by_every_key_stay(self) -> None:
        assert redact_key("use an sk-test key", SECRET, FP) == "use an sk-test key"

    def test_a_key_followed_by_more_text_keeps_the_text(self) -> None:
        assert redact_key(f"{SECRET}XYZ!", SECRET, FP) == f"{FP}XYZ!"
