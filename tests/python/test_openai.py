"""The OpenAI-compatible front door through the official `openai` Python SDK,
against the demo gateway and its simulated vLLM upstreams."""

import openai
import pytest
from openai import OpenAI

DEMO_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DEMO_UPSTREAMS = ("sim-fast", "sim-medium", "sim-slow")


@pytest.fixture()
def client(gateway):
    # The key is the client's own: the gateway never forwards it upstream.
    return OpenAI(base_url=f"{gateway}/v1", api_key="client-key", max_retries=0, timeout=20)


def test_models_list_names_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [DEMO_MODEL]


def test_a_chat_completion(client):
    answer = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "What is vLLM?"}],
        max_tokens=12,
    )
    text = answer.choices[0].message.content
    assert text.split(" ", 1)[0].strip("[]") in DEMO_UPSTREAMS
    assert "Simulated answer about: What is vLLM?" in text
    assert len(text.split()) == 12
    assert answer.usage.completion_tokens == 12
    assert answer.model == DEMO_MODEL


def test_a_streamed_chat_completion_reassembles_and_ends_cleanly(client):
    stream = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "Explain batching"}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usage = [], [], None
    for chunk in stream:  # the SDK stops at data: [DONE]; a hang would time out
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    text = "".join(pieces)
    assert "Simulated answer about: Explain batching" in text
    assert len(text.split()) == 10
    assert finish_reasons == ["length"]
    assert usage is not None and usage.completion_tokens == 10


def test_a_text_completion(client):
    answer = client.completions.create(model=DEMO_MODEL, prompt="Once upon a time", max_tokens=5)
    assert len(answer.choices[0].text.split()) == 5


def test_an_unknown_model_is_a_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404
    assert raised.value.body["code"] == "model_not_found"
    assert raised.value.body["message"] == "The model `gpt-17` does not exist."
