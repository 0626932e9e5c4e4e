"""The error envelopes: keypool's own and OpenAI's shape, with the first bad field as `param`."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from app.api.edge import GuardedFastAPI
from app.api.errors import (
    first_bad_field,
    install_error_handlers,
    invalid_request,
    openai_error_body,
)
from app.errors import InvalidRequest, KeypoolError, RateLimited


class Body(BaseModel):
    name: str
    count: int


def validation_error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(data)
    return caught.value


class TestInvalidRequest:
    def test_the_message_names_the_bad_fields_and_details_list_them(self):
        error = invalid_request(validation_error({"name": 3}))
        assert error.message == "invalid request: name, count"
        assert [d["loc"] for d in error.details["details"]] == [["name"], ["count"]]
        assert error.body()["error"]["type"] == "invalid_request"

    def test_a_body_that_is_not_an_object_is_named_body(self):
        error = invalid_request(validation_error([1, 2]))
        assert error.details["details"][0]["loc"] == ["body"]


class TestOpenAIShape:
    def test_an_invalid_request_is_a_400_invalid_request_error_with_param(self):
        error = invalid_request(validation_error({"name": "x"}))
        body = openai_error_body(error)["error"]
        assert (body["type"], body["code"], body["param"]) == (
            "invalid_request_error",
            "invalid_request",
            "count",
        )

    def test_a_rate_limit_keeps_its_extra_fields(self):
        error = RateLimited("slow down", retry_after_s=2.5, details={})
        body = openai_error_body(error)["error"]
        assert (body["type"], body["retry_after"], body["param"]) == ("rate_limit_error", 3, None)

    def test_a_server_side_failure_is_an_api_error(self):
        assert openai_error_body(KeypoolError("boom"))["error"]["type"] == "api_error"


class TestFirstBadField:
    def test_the_body_prefix_is_dropped(self):
        assert first_bad_field([{"loc": ["body", "messages", "0", "role"]}]) == "messages.0.role"

    def test_union_members_collapse_to_their_common_path(self):
        details = [
            {"loc": ["body", "messages", "0", "content", "str"]},
            {"loc": ["body", "messages", "0", "content", "list[Part]"]},
        ]
        assert first_bad_field(details) == "messages.0.content"

    def test_an_invalid_request_without_details_has_no_param(self):
        body = openai_error_body(InvalidRequest("frame is not valid JSON"))["error"]
        assert body["param"] is None


async def test_an_unexpected_exception_answers_500_with_the_request_id():
    app = GuardedFastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret payload")

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/boom", headers={"X-Request-Id": "trace-500"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "trace-500"
    assert answer.json()["error"]["type"] == "internal_error"
    assert "secret payload" not in answer.text
