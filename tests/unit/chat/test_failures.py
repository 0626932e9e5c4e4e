"""Upstream failures: status classification, errors returned at once, and the exhausted shapes."""

from __future__ import annotations

import pytest

from app.chat.failures import Attempt, exhausted_error, final_error
from app.chat.routing import Route
from app.config import ApiKey, ProviderConfig
from app.errors import (
    AllKeysFailed,
    AllProvidersFailed,
    ModelNotFound,
    RateLimited,
    UpstreamBadRequest,
)
from app.keys.model import NO_SIGNAL, Outcome
from app.providers import errors as up


def provider(name: str) -> ProviderConfig:
    return ProviderConfig(name, f"http://{name}/v1", "m", (ApiKey("s", f"{name}:0:x"),))


ALPHA, BETA = provider("alpha"), provider("beta")
PATH_A = Route("A", (ALPHA, BETA))
PATH_B = Route("B", (ALPHA,), "m-large")


def attempt(error: Outcome, index: int = 0, name: str = "alpha", status: int | None = 500):
    return Attempt(name, index, error.value, status)


class TestClassification:
    @pytest.mark.parametrize(
        ("status", "kind", "outcome"),
        [
            (400, up.UpstreamRejected, Outcome.BAD_REQUEST),
            (401, up.UpstreamAuthFailed, Outcome.AUTH_FAILED),
            (402, up.UpstreamAuthFailed, Outcome.AUTH_FAILED),
            (403, up.UpstreamAuthFailed, Outcome.AUTH_FAILED),
            (404, up.UpstreamNotFound, Outcome.NOT_FOUND),
            (413, up.UpstreamRejected, Outcome.BAD_REQUEST),
            (422, up.UpstreamRejected, Outcome.BAD_REQUEST),
            (429, up.UpstreamRateLimited, Outcome.RATE_LIMITED),
            (500, up.UpstreamServerError, Outcome.SERVER_ERROR),
            (503, up.UpstreamServerError, Outcome.SERVER_ERROR),
            (418, up.UpstreamServerError, Outcome.SERVER_ERROR),
            (302, up.UpstreamServerError, Outcome.SERVER_ERROR),
        ],
    )
    def test_status_table(self, status: int, kind: type[up.UpstreamError], outcome: Outcome):
        error = up.error_for_status(status, NO_SIGNAL, "why")
        assert type(error) is kind
        assert error.outcome is outcome
        assert error.status == status
        assert error.upstream_message == "why"
        assert str(error) == f"upstream {status}"

    def test_transport_failures_are_key_failures_that_feed_the_breaker(self):
        timeout = up.UpstreamTimeout("slow")
        assert isinstance(timeout, up.UpstreamConnectionError)
        for outcome in (timeout.outcome, up.UpstreamConnectionError("x").outcome):
            assert outcome.is_key_failure
            assert outcome.is_provider_failure
        assert not Outcome.AUTH_FAILED.is_provider_failure
        assert not Outcome.RATE_LIMITED.is_provider_failure
        assert not Outcome.BAD_REQUEST.is_key_failure


class TestReturnedAtOnce:
    def test_upstream_400_is_upstream_bad_request_with_its_message(self):
        error = up.error_for_status(400, NO_SIGNAL, "max_tokens is too large")
        final = final_error(error, PATH_B, "alpha")
        assert isinstance(final, UpstreamBadRequest)
        assert final.status_code == 400
        assert "max_tokens is too large" in final.message
        assert final.details == {"provider": "alpha", "status": 400}

    @pytest.mark.parametrize("route", [PATH_A, PATH_B])
    def test_upstream_400_is_final_on_both_paths(self, route: Route):
        assert final_error(up.error_for_status(422, NO_SIGNAL, None), route, "alpha") is not None

    def test_upstream_404_on_path_b_is_model_not_found(self):
        final = final_error(up.error_for_status(404, NO_SIGNAL, None), PATH_B, "alpha")
        assert isinstance(final, ModelNotFound)
        assert final.status_code == 404
        assert final.details == {"provider": "alpha", "model": "m-large"}

    def test_upstream_404_on_path_a_moves_to_the_next_provider(self):
        assert final_error(up.error_for_status(404, NO_SIGNAL, None), PATH_A, "alpha") is None

    @pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
    def test_key_failures_are_not_final(self, status: int):
        assert final_error(up.error_for_status(status, NO_SIGNAL, None), PATH_B, "alpha") is None


class TestExhausted:
    def test_all_rate_limited_is_429_with_whole_seconds_rounded_up(self):
        attempts = [attempt(Outcome.RATE_LIMITED, i, status=429) for i in range(2)]
        error = exhausted_error(PATH_B, attempts, {}, 2.1)
        assert isinstance(error, RateLimited)
        assert error.status_code == 429
        assert error.headers == {"Retry-After": "3"}
        assert error.details["retry_after"] == 3
        assert error.details["errors"] == {"0": "rate_limited", "1": "rate_limited"}

    @pytest.mark.parametrize(
        ("wait", "header"), [(None, "1"), (0.0, "1"), (0.2, "1"), (59.0, "59")]
    )
    def test_retry_after_is_at_least_one_second(self, wait: float | None, header: str):
        error = exhausted_error(PATH_B, [attempt(Outcome.RATE_LIMITED, status=429)], {}, wait)
        assert error.headers["Retry-After"] == header

    def test_cooling_providers_that_were_skipped_still_make_it_a_429(self):
        attempts = [attempt(Outcome.RATE_LIMITED, status=429)]
        error = exhausted_error(PATH_A, attempts, {"beta": "rate_limited"}, 4.0)
        assert isinstance(error, RateLimited)
        assert error.details["errors"] == {"alpha": "rate_limited", "beta": "rate_limited"}

    def test_mixed_failures_on_path_b_are_all_keys_failed_by_key_index(self):
        attempts = [
            attempt(Outcome.RATE_LIMITED, 0, status=429),
            attempt(Outcome.SERVER_ERROR, 1, status=500),
            attempt(Outcome.AUTH_FAILED, 2, status=401),
        ]
        error = exhausted_error(PATH_B, attempts, {}, 5.0)
        assert isinstance(error, AllKeysFailed)
        assert (error.status_code, error.type) == (503, "all_keys_failed")
        assert error.headers == {}
        assert error.details["provider"] == "alpha"
        assert error.details["model"] == "m-large"
        assert error.details["errors"] == {
            "0": "rate_limited",
            "1": "server_error",
            "2": "auth_failed",
        }
        assert [a["key_index"] for a in error.details["attempts"]] == [0, 1, 2]

    def test_mixed_failures_on_path_a_are_all_providers_failed_by_provider(self):
        attempts = [attempt(Outcome.SERVER_ERROR, 0), attempt(Outcome.TIMEOUT, 0, "beta", None)]
        error = exhausted_error(PATH_A, attempts, {}, None)
        assert isinstance(error, AllProvidersFailed)
        assert (error.status_code, error.type) == (503, "all_providers_failed")
        assert error.details["errors"] == {"alpha": "server_error", "beta": "timeout"}

    def test_a_provider_with_an_open_circuit_is_listed_with_its_reason(self):
        error = exhausted_error(
            PATH_A, [attempt(Outcome.RATE_LIMITED, status=429)], {"beta": "circuit_open"}, 1.0
        )
        assert isinstance(error, AllProvidersFailed)
        assert error.details["errors"] == {"alpha": "rate_limited", "beta": "circuit_open"}

    def test_a_path_b_provider_with_no_usable_key_names_each_key_state(self):
        untried = {0: "failed", 1: "disabled"}
        error = exhausted_error(PATH_B, [], {"alpha": "no_usable_key"}, None, untried)
        assert isinstance(error, AllKeysFailed)
        assert error.details["errors"] == {"0": "failed", "1": "disabled"}

    def test_path_b_errors_cover_tried_and_untried_keys(self):
        error = exhausted_error(
            PATH_B, [attempt(Outcome.SERVER_ERROR)], {}, None, {1: "failed", 2: "disabled"}
        )
        assert isinstance(error, AllKeysFailed)
        assert set(error.details["errors"]) == {"0", "1", "2"}

    def test_envelope_is_the_design_shape(self):
        error = exhausted_error(PATH_B, [attempt(Outcome.SERVER_ERROR)], {}, None)
        body = error.body()
        assert set(body) == {"error"}
        assert body["error"]["type"] == "all_keys_failed"
        assert isinstance(body["error"]["message"], str)
        assert body["error"]["attempts"] == [
            {"provider": "alpha", "key_index": 0, "error": "server_error", "status": 500}
        ]
