"""The MCP endpoint through the official Python SDK (`mcp`) over Streamable
HTTP, against the demo gateway and its simulated upstreams."""

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp.types import INVALID_PARAMS

try:  # The current name; streamablehttp_client is its deprecated alias.
    from mcp.client.streamable_http import streamable_http_client as connect
except ImportError:  # pragma: no cover - older SDKs
    from mcp.client.streamable_http import streamablehttp_client as connect

DEMO_UPSTREAMS = ["sim-fast", "sim-medium", "sim-slow"]
DEMO_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def in_session(gateway: str, use):
    """Opens a session (initialize + initialized), runs `use(session, init)`,
    and ends the session (the SDK sends DELETE) before returning its result."""

    async def main():
        async with connect(f"{gateway}/mcp") as (read, write, _session_id):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                return await use(session, init)

    return anyio.run(main)


def test_initialize_negotiates_2025_11_25(gateway):
    async def use(session, init):
        return init

    init = in_session(gateway, use)
    assert init.protocolVersion == "2025-11-25"
    assert init.serverInfo.name == "context7-lb"
    assert init.serverInfo.version
    assert init.capabilities.tools is not None
    assert init.capabilities.tools.listChanged is False
    assert "research" in init.instructions


def test_tools_are_listed_with_schemas(gateway):
    async def use(session, init):
        return await session.list_tools()

    tools = {tool.name: tool for tool in in_session(gateway, use).tools}
    assert sorted(tools) == ["list_models", "research", "upstream_status"]
    research = tools["research"]
    assert research.inputSchema["type"] == "object"
    assert research.inputSchema["required"] == ["query"]
    assert research.inputSchema["properties"]["max_tokens"]["default"] == 2000
    assert research.outputSchema["type"] == "object"
    for tool in tools.values():
        assert tool.description
        assert tool.inputSchema["type"] == "object"


def test_research_is_answered_by_a_simulated_upstream(gateway):
    query = "Explain the benefits of vLLM"

    async def use(session, init):
        # call_tool also checks structuredContent against the tool's outputSchema.
        return await session.call_tool("research", {"query": query, "max_tokens": 100})

    result = in_session(gateway, use)
    assert result.isError is False
    text = result.content[0].text
    structured = result.structuredContent
    assert structured["upstream"] in DEMO_UPSTREAMS
    # The simulator opens with its name and the question, one token a word.
    assert text.startswith(f"[{structured['upstream']}] Simulated answer about: {query}"), text
    assert structured["result"] == text
    assert structured["model"] == DEMO_MODEL
    assert structured["tokens_used"] == len(query.split()) + len(text.split())
    assert structured["latency_ms"] >= 0


def test_list_models_names_the_model_and_its_upstreams(gateway):
    async def use(session, init):
        return await session.call_tool("list_models", {})

    result = in_session(gateway, use)
    assert result.isError is False
    assert result.structuredContent == {"models": [{"id": DEMO_MODEL, "upstreams": DEMO_UPSTREAMS}]}


def test_upstream_status_shows_health_and_no_key(gateway):
    async def use(session, init):
        return await session.call_tool("upstream_status", {})

    result = in_session(gateway, use)
    status = result.structuredContent
    assert status["healthy"] == 3 and status["total"] == 3
    assert [u["name"] for u in status["upstreams"]] == DEMO_UPSTREAMS
    assert all(u["health"] == "healthy" for u in status["upstreams"])
    assert all(u["last_check"]["outcome"] == "up" for u in status["upstreams"])
    # The demo upstreams' key.
    assert "demo-key" not in result.model_dump_json()


def test_bad_arguments_are_invalid_params_with_the_validation_messages(gateway):
    async def use(session, init):
        with pytest.raises(McpError) as bad:
            await session.call_tool("research", {"query": "", "max_tokens": 50})
        with pytest.raises(McpError) as unknown:
            await session.call_tool("no_such_tool", {})
        # The session is still usable afterwards.
        await session.send_ping()
        return bad.value.error, unknown.value.error

    bad, unknown = in_session(gateway, use)
    assert bad.code == INVALID_PARAMS
    assert "query: String should have at least 1 character" in bad.message
    assert "max_tokens: Input should be greater than or equal to 100" in bad.message
    assert [e["loc"] for e in bad.data["errors"]] == [["arguments", "query"], ["arguments", "max_tokens"]]
    assert unknown.code == INVALID_PARAMS
    assert "no_such_tool" in unknown.message


def test_the_transport_refuses_what_it_must(gateway):
    url = f"{gateway}/mcp"
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(url, headers={"accept": "text/event-stream"}).status_code == 405
        foreign = http.post(url, json=initialize, headers={**headers, "origin": "https://evil.example"})
        assert foreign.status_code == 403
        assert http.post(url, content=b"{", headers=headers).json()["error"]["code"] == -32700
        answer = http.post(url, json=initialize, headers=headers)
        session = answer.headers["mcp-session-id"]
        in_session_headers = {**headers, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        assert http.delete(url, headers=in_session_headers).status_code == 200
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        assert http.post(url, json=ping, headers=in_session_headers).status_code == 404
