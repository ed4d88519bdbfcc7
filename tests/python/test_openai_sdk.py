"""The official `openai` Python SDK, unchanged, against Sluice: OpenAI- and Azure-style clients,
sync and async, streaming, and the SDK exceptions Sluice's errors map to."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI

from harness import (
    BACKEND_KEYS,
    CLIENT_KEY,
    LIMITED_KEYS,
    OTHER_CLIENT_KEY,
    OTHER_KEY_POOLS,
    POOLS,
    WRONG_KEY,
    http_json,
)

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Say hello to the sluice."}]
TIMEOUT = 15.0


def openai_client(sluice: Any, key: str = CLIENT_KEY, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=sluice.url + "/v1", api_key=key, timeout=TIMEOUT, **kwargs)


def azure_client(sluice: Any, key: str = CLIENT_KEY, **kwargs: Any) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=sluice.url, api_key=key, api_version=API_VERSION, timeout=TIMEOUT, **kwargs
    )


def assert_chat_completion(completion: Any, max_tokens: int) -> None:
    assert completion.object == "chat.completion"
    assert completion.choices, completion
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == max_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def assert_chat_stream(chunks: list[Any], max_tokens: int) -> str:
    """Checks the chunk sequence of an include_usage stream and returns the assembled text."""
    assert len(chunks) >= 3, chunks
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "exactly one usage chunk"
    assert chunks[-1] is with_usage[0], "the usage chunk comes last"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == max_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "streamed text"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    return text


def upstream_requests(mock: Any, deployment: str | None = None) -> list[dict[str, Any]]:
    requests = [r for r in mock.requests() if not r["path"].startswith("/_mock")]
    if deployment is not None:
        requests = [
            r for r in requests
            if f"/deployments/{deployment}/" in r["path"] or (r.get("body") or {}).get("model") == deployment
        ]
    return requests


# --- OpenAI-style client (/v1) ---------------------------------------------------------------


def test_openai_chat_completion(sluice):
    """OpenAI(base_url=…/v1): a chat completion has content and usage, and names its backend."""
    client = openai_client(sluice)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=5
    )
    assert raw.status_code == 200
    assert raw.headers["x-sluice-backend"] in {"east", "west"}
    assert raw.headers["x-sluice-attempts"] == "1"
    completion = raw.parse()
    assert_chat_completion(completion, max_tokens=5)
    assert completion._request_id, "the backend's x-request-id is passed through"


def test_openai_chat_stream_with_usage(sluice):
    """OpenAI client: a streamed chat arrives in chunks, ends with a usage chunk, text assembles."""
    client = openai_client(sluice)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    assert_chat_stream(chunks, max_tokens=6)


def test_openai_embeddings(sluice):
    """OpenAI client: embeddings return one vector per input, of the mock's dimension (8)."""
    client = openai_client(sluice)
    result = client.embeddings.create(model="gpt-4o", input=["one", "two", "three"])
    assert len(result.data) == 3
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert all(isinstance(x, float) for x in result.data[0].embedding)
    assert result.usage.prompt_tokens > 0


def test_openai_embeddings_as_floats(sluice):
    """OpenAI client: embeddings with encoding_format="float" come back as float vectors too."""
    client = openai_client(sluice)
    result = client.embeddings.create(model="gpt-4o", input="one", encoding_format="float")
    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 8


def test_openai_legacy_completion(sluice):
    """OpenAI client: the legacy completions endpoint returns text and usage."""
    client = openai_client(sluice)
    completion = client.completions.create(model="gpt-4o", prompt="Once upon a time", max_tokens=4)
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage.completion_tokens == 4


def test_openai_models_list(sluice):
    """OpenAI client: models.list() lists exactly the pools the key may use."""
    ids = sorted(m.id for m in openai_client(sluice).models.list())
    assert ids == sorted(POOLS)
    other = [m.id for m in openai_client(sluice, key=OTHER_CLIENT_KEY).models.list()]
    assert other == OTHER_KEY_POOLS


def test_openai_models_retrieve(sluice):
    """OpenAI client: models.retrieve("gpt-4o") returns that pool as a model object."""
    model = openai_client(sluice, max_retries=0).models.retrieve("gpt-4o")
    assert model.id == "gpt-4o"
    assert model.object == "model"


def test_azure_v1_style_base_url(sluice):
    """OpenAI(base_url=…/openai/v1), Azure's v1 API style, routes by model like /v1."""
    client = OpenAI(base_url=sluice.url + "/openai/v1", api_key=CLIENT_KEY, timeout=TIMEOUT)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=3
    )
    assert raw.headers["x-sluice-backend"] in {"east", "west"}
    assert_chat_completion(raw.parse(), max_tokens=3)


def test_openai_kind_backend(sluice):
    """A pool whose backend is kind openai answers the SDK; the backend gets its Bearer key on /v1."""
    client = openai_client(sluice)
    before = len(upstream_requests(sluice.mocks["oai"]))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=2
    )
    assert raw.headers["x-sluice-backend"] == "oai"
    assert_chat_completion(raw.parse(), max_tokens=2)
    seen = upstream_requests(sluice.mocks["oai"])[before:]
    assert len(seen) == 1
    assert seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["headers"]["authorization"] == f"Bearer {BACKEND_KEYS['oai']}"
    assert "api-key" not in seen[0]["headers"]


# --- Azure client ----------------------------------------------------------------------------


def test_azure_chat_completion(sluice):
    """AzureOpenAI(azure_endpoint=proxy): a chat completion on deployment gpt-4o works."""
    client = azure_client(sluice)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=5
    )
    assert raw.headers["x-sluice-backend"] in {"east", "west"}
    assert_chat_completion(raw.parse(), max_tokens=5)


def test_azure_chat_stream_with_usage(sluice):
    """AzureOpenAI: a stream whose first chunk has empty choices (filter results) parses to the end."""
    client = azure_client(sluice)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    assert chunks[0].choices == [], "Azure's prompt-filter chunk comes first"
    assert (chunks[0].model_extra or {}).get("prompt_filter_results"), chunks[0]
    assert_chat_stream(chunks, max_tokens=7)


def test_azure_embeddings(sluice):
    """AzureOpenAI: embeddings on deployment gpt-4o return one vector per input."""
    client = azure_client(sluice)
    result = client.embeddings.create(model="gpt-4o", input=["alpha", "beta"])
    assert len(result.data) == 2
    assert all(len(d.embedding) == 8 for d in result.data)


def test_azure_api_version_passed_upstream(sluice):
    """AzureOpenAI: the client's api-version reaches the backend; /v1 calls get the default one."""
    azure = azure_client(sluice)
    azure_backend = azure.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=1
    ).headers["x-sluice-backend"]
    last = upstream_requests(sluice.mocks[azure_backend])[-1]
    assert last["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert f"api-version={API_VERSION}" in (last["query"] or "")

    v1_backend = openai_client(sluice).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=1
    ).headers["x-sluice-backend"]
    last = upstream_requests(sluice.mocks[v1_backend])[-1]
    assert last["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert "api-version=" in (last["query"] or "")


# --- async clients ---------------------------------------------------------------------------


async def _async_chat_and_stream(client: Any) -> None:
    async with client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
        assert_chat_completion(completion, max_tokens=5)
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert_chat_stream(chunks, max_tokens=4)


def test_async_openai(sluice):
    """AsyncOpenAI: async chat completion and async stream both work."""
    client = AsyncOpenAI(base_url=sluice.url + "/v1", api_key=CLIENT_KEY, timeout=TIMEOUT)
    asyncio.run(_async_chat_and_stream(client))


def test_async_azure_openai(sluice):
    """AsyncAzureOpenAI: async chat completion and async stream both work."""
    client = AsyncAzureOpenAI(
        azure_endpoint=sluice.url, api_key=CLIENT_KEY, api_version=API_VERSION, timeout=TIMEOUT
    )
    asyncio.run(_async_chat_and_stream(client))


# --- balancing and retries -------------------------------------------------------------------


def test_round_robin_alternates_backends(sluice):
    """Consecutive calls to a round-robin pool alternate x-sluice-backend between east and west."""
    client = openai_client(sluice)
    backends = [
        client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=1
        ).headers["x-sluice-backend"]
        for _ in range(6)
    ]
    assert set(backends) == {"east", "west"}, backends
    assert all(a != b for a, b in zip(backends, backends[1:])), backends


def test_backend_500_is_retried_on_another_backend(sluice):
    """One backend answering 500 once: the SDK call still succeeds, on the other backend, attempt 2."""
    east = sluice.mocks["east"]
    east.add_fault(kind="status", status=500, times=1, deployment="failover")
    before = len(upstream_requests(east, "failover"))
    client = openai_client(sluice, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="failover", messages=MESSAGES, max_tokens=3
    )
    assert raw.status_code == 200
    assert raw.headers["x-sluice-attempts"] == "2"
    assert raw.headers["x-sluice-backend"] == "fo-west"
    assert_chat_completion(raw.parse(), max_tokens=3)
    assert len(upstream_requests(east, "failover")) == before + 1, "east got (and failed) attempt 1"


def test_stream_is_retried_before_the_first_byte(sluice):
    """A streamed call whose first backend answers 500 streams in full from the other backend."""
    sluice.mocks["east"].add_fault(kind="status", status=500, times=1, deployment="failover-stream")
    client = openai_client(sluice, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="failover-stream",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-sluice-attempts"] == "2"
    assert raw.headers["x-sluice-backend"] == "fs-west"
    with raw.parse() as stream:
        assert_chat_stream(list(stream), max_tokens=4)


def test_stream_cut_off_upstream_raises(sluice):
    """A backend stream broken off mid-way surfaces in the SDK as an error, not a clean short end."""
    sluice.mocks["east"].add_fault(kind="stream_abort_after", chunks=2, times=1, deployment="aborts")
    client = openai_client(sluice, max_retries=0)
    stream = client.chat.completions.create(
        model="aborts", messages=MESSAGES, max_tokens=8, stream=True
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        with stream:
            for chunk in stream:
                received.append(chunk)
    assert 1 <= len(received) <= 2, received


def test_stream_gone_silent_raises_idle_timeout_error(sluice):
    """A backend that stops sending mid-stream: after the pool's idle timeout (500 ms) Sluice ends
    the stream with an error event, on which the SDK raises APIError naming the idle timeout."""
    sluice.mocks["east"].add_fault(kind="stall_after", chunks=2, times=1, deployment="idle")
    client = openai_client(sluice, max_retries=0)
    stream = client.chat.completions.create(
        model="idle", messages=MESSAGES, max_tokens=8, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        with stream:
            for chunk in stream:
                received.append(chunk)
    error = caught.value
    # Not a broken connection (APIConnectionError is an APIError too): the stream ended cleanly
    # with an error event in OpenAI's shape.
    assert type(error) is openai.APIError, repr(error)
    assert error.code == "upstream_idle_timeout", error.body
    assert error.type == "server_error", error.body
    assert "sent nothing" in error.message, error.message
    assert len(received) == 2, received
    assert received[0].choices == [], "Azure's prompt-filter chunk, then one token"
    assert received[1].choices[0].delta.content


def test_missing_deployment_fails_over(sluice):
    """AzureOpenAI: a backend answering 404 DeploymentNotFound is skipped; the call completes on
    the other backend as if nothing happened."""
    east = sluice.mocks["east"]
    east.add_fault(
        kind="status",
        status=404,
        deployment="missing-deployment",
        body={"error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        }},
    )
    before = len(upstream_requests(east, "missing-deployment"))
    client = azure_client(sluice, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="missing-deployment", messages=MESSAGES, max_tokens=3
    )
    assert raw.status_code == 200
    assert raw.headers["x-sluice-backend"] == "md-west"
    assert raw.headers["x-sluice-attempts"] == "2"
    assert_chat_completion(raw.parse(), max_tokens=3)
    assert len(upstream_requests(east, "missing-deployment")) == before + 1, "east was asked once"


def test_all_backends_429_raise_rate_limit_error(sluice):
    """Every backend 429: with max_retries=0 the SDK raises RateLimitError carrying retry-after(-ms)."""
    east, west = sluice.mocks["east"], sluice.mocks["west"]
    for mock in (east, west):
        mock.add_fault(kind="status", status=429, retry_after_ms=30000, deployment="ratelimited")
    client = openai_client(sluice, max_retries=0)

    with pytest.raises(openai.RateLimitError) as first:
        client.chat.completions.create(model="ratelimited", messages=MESSAGES, max_tokens=1)
    assert first.value.status_code == 429
    headers = first.value.response.headers
    assert int(headers["retry-after-ms"]) > 0, dict(headers)
    assert int(headers["retry-after"]) > 0, dict(headers)

    # Both backends now cool down: Sluice answers 429 itself, without calling either.
    seen = len(upstream_requests(east, "ratelimited")) + len(upstream_requests(west, "ratelimited"))
    with pytest.raises(openai.RateLimitError) as second:
        client.chat.completions.create(model="ratelimited", messages=MESSAGES, max_tokens=1)
    headers = second.value.response.headers
    assert 0 < int(headers["retry-after-ms"]) <= 30000, dict(headers)
    assert 0 < int(headers["retry-after"]) <= 30, dict(headers)
    error = second.value.response.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys(), error
    after = len(upstream_requests(east, "ratelimited")) + len(upstream_requests(west, "ratelimited"))
    assert after == seen, "no backend is called while all cool down"


# --- client errors ---------------------------------------------------------------------------


def assert_openai_error_shape(error: openai.APIStatusError) -> dict[str, Any]:
    body = error.response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= body["error"].keys(), body
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("make_client", [openai_client, azure_client], ids=["openai", "azure"])
def test_wrong_key_raises_authentication_error(sluice, make_client):
    """A wrong client key raises openai.AuthenticationError (401) in OpenAI's error shape."""
    client = make_client(sluice, key=WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert_openai_error_shape(caught.value)


@pytest.mark.parametrize("make_client", [openai_client, azure_client], ids=["openai", "azure"])
def test_unknown_deployment_raises_not_found(sluice, make_client):
    """An unknown model / deployment raises openai.NotFoundError (404, DeploymentNotFound)."""
    client = make_client(sluice, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-pool", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert assert_openai_error_shape(caught.value)["code"] == "DeploymentNotFound"


@pytest.mark.parametrize("make_client", [openai_client, azure_client], ids=["openai", "azure"])
def test_key_not_allowed_for_pool_raises_permission_denied(sluice, make_client):
    """A key limited to another pool raises openai.PermissionDeniedError (403) for this one."""
    client = make_client(sluice, key=OTHER_CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 403
    assert_openai_error_shape(caught.value)
    # The same key works on its own pool.
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    assert completion.choices[0].message.content


def test_oversized_body_is_413(sluice):
    """A request body over the proxy's 16 MiB limit raises APIStatusError 413 in OpenAI's shape."""
    client = openai_client(sluice, max_retries=0)
    huge = [{"role": "user", "content": "x" * (16 * 1024 * 1024 + 1)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=huge)
    assert caught.value.status_code == 413
    assert_openai_error_shape(caught.value)


# --- secrets ---------------------------------------------------------------------------------


def test_client_key_never_reaches_backends(sluice):
    """Backends see only their own key from config (api-key / Bearer), never the client's key."""
    openai_client(sluice).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
    azure_client(sluice).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
    openai_client(sluice).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    openai_client(sluice, key=OTHER_CLIENT_KEY).embeddings.create(model="gpt-4o-mini", input="x")
    for name, mock in sluice.mocks.items():
        requests = upstream_requests(mock)
        assert requests, f"{name} saw no traffic"
        for request in requests:
            headers = request["headers"]
            for value in headers.values():
                assert CLIENT_KEY not in value and OTHER_CLIENT_KEY not in value, (name, headers)
            if name == "oai":
                assert headers.get("authorization") == f"Bearer {mock.key}", headers
            else:
                assert headers.get("api-key") == mock.key, headers
                assert "authorization" not in headers, headers


# --- client-key limits -----------------------------------------------------------------------


class RecordedSleeps:
    """Stands in for the `time` module of the SDK's retry loop: records the waits it asks for
    instead of sleeping them (a rate limit's wait runs into the next minute)."""

    def __init__(self) -> None:
        import time as real_time

        self._time = real_time
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> RecordedSleeps:
    sleeps = RecordedSleeps()
    monkeypatch.setattr(openai._base_client, "time", sleeps)
    return sleeps


def limited_client(sluice: Any, key_id: str, max_retries: int) -> tuple[OpenAI, list[Any]]:
    """An OpenAI client with a limited key, and every response its HTTP client received."""
    responses: list[Any] = []
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [responses.append]})
    client = openai_client(
        sluice, key=LIMITED_KEYS[key_id][0], max_retries=max_retries, http_client=http_client
    )
    return client, responses


def use_up(client: OpenAI) -> openai.RateLimitError:
    """Calls until the key's limit refuses one; the first call goes through."""
    for attempt in range(5):
        try:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        except openai.RateLimitError as error:
            assert attempt > 0, "the first call is within the limit"
            return error
    raise AssertionError("the limit never refused a call")


def ratelimited_count(sluice: Any, key_id: str, limit: str) -> float:
    status, text = http_json("GET", f"{sluice.ops_url}/metrics")
    assert status == 200, text
    series = f'sluice_ratelimited_total{{pool="gpt-4o",client_key="{key_id}",limit="{limit}"}}'
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def test_key_over_its_request_rate_raises_rate_limit_error(sluice):
    """A key over requests_per_minute: RateLimitError, code rate_limit_exceeded, OpenAI's headers."""
    client, responses = limited_client(sluice, "team-rpm", max_retries=0)
    error = use_up(client)
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    body = assert_openai_error_shape(error)
    assert body["type"] == "requests"
    assert "requests per minute" in body["message"], body
    headers = error.response.headers
    assert int(headers["retry-after-ms"]) > 0, dict(headers)
    assert int(headers["retry-after"]) == -(-int(headers["retry-after-ms"]) // 1000), dict(headers)
    assert headers["x-ratelimit-limit-requests"] == "1", dict(headers)
    assert headers["x-ratelimit-remaining-requests"] == "0", dict(headers)
    assert "x-should-retry" not in headers, "a rate comes back"
    # The call that went through carried the key's own rate-limit headers.
    assert responses[0].status_code == 200
    assert responses[0].headers["x-ratelimit-limit-requests"] == "1"


def test_rate_limited_call_is_retried_after_retry_after_ms(sluice, recorded_sleeps):
    """With max_retries=2 the SDK retries a rate-limited call twice, each time after exactly the
    retry-after-ms the proxy sent (recorded rather than slept: it runs into the next minute)."""
    client, _ = limited_client(sluice, "team-retry", max_retries=0)
    use_up(client)
    client, responses = limited_client(sluice, "team-retry", max_retries=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
    assert caught.value.code == "rate_limit_exceeded"
    assert [r.status_code for r in responses] == [429, 429, 429], "one call and two retries"
    waits = [int(r.headers["retry-after-ms"]) / 1000 for r in responses[:2]]
    assert all(0 < wait <= 120 for wait in waits), waits
    assert recorded_sleeps.sleeps == pytest.approx(waits), (recorded_sleeps.sleeps, waits)


def test_exhausted_token_quota_is_not_retried(sluice, recorded_sleeps):
    """insufficient_quota carries x-should-retry: false: with max_retries=2 the SDK raises at
    once, after one request to the proxy."""
    client, _ = limited_client(sluice, "team-quota", max_retries=0)
    exhausted = use_up(client)
    assert exhausted.code == "insufficient_quota"

    before = ratelimited_count(sluice, "team-quota", "token_quota")
    client, responses = limited_client(sluice, "team-quota", max_retries=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
    error = caught.value
    assert error.code == "insufficient_quota"
    body = assert_openai_error_shape(error)
    assert body["type"] == "insufficient_quota"
    assert "token quota" in body["message"], body
    assert error.response.headers["x-should-retry"] == "false"
    assert len(responses) == 1, "not retried"
    assert recorded_sleeps.sleeps == []
    assert ratelimited_count(sluice, "team-quota", "token_quota") == before + 1
