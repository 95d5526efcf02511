//! The tools: their list and schemas, the validation of a call, running it,
//! and the results.

use super::*;

// ---------------------------------------------------------------------------
// Tools

/// The `tools/list` result. The research schema is written from the same
/// constants that validate `/v1/research`.
pub fn tools_list() -> Value {
    let (min_tokens, max_tokens) = MAX_TOKENS_RANGE;
    let (min_temperature, max_temperature) = TEMPERATURE_RANGE;
    let no_arguments = json!({"type": "object", "properties": {}});
    json!({"tools": [
        {
            "name": "research",
            "title": "Research",
            "description": "Answer a research question with the large language model behind the \
                gateway. The query should be self-contained: the model sees nothing else. Returns \
                the answer as text, and the model, tokens used and latency as structured content.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": QUERY_MAX_CHARS,
                        "description": "The question or research task.",
                    },
                    "max_tokens": {
                        "type": "integer",
                        "minimum": min_tokens,
                        "maximum": max_tokens,
                        "default": MAX_TOKENS_DEFAULT,
                        "description": "Most tokens in the answer.",
                    },
                    "temperature": {
                        "type": "number",
                        "minimum": min_temperature,
                        "maximum": max_temperature,
                        "default": TEMPERATURE_DEFAULT,
                        "description": "Sampling temperature: 0 for the most likely answer, higher for more varied ones.",
                    },
                },
                "required": ["query"],
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "result": {"type": "string", "description": "The answer."},
                    "model": {"type": "string", "description": "The model that answered."},
                    "tokens_used": {"type": "integer", "minimum": 0, "description": "Prompt and answer tokens."},
                    "latency_ms": {"type": "integer", "minimum": 0, "description": "Time the gateway took, retries included."},
                    "timestamp": {"type": "string", "description": "When the answer was ready, ISO 8601."},
                    "upstream": {"type": "string", "description": "The upstream that answered."},
                },
                "required": ["result", "model", "tokens_used", "latency_ms", "timestamp", "upstream"],
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": true},
        },
        {
            "name": "list_models",
            "title": "List models",
            "description": "The models the gateway's upstreams serve, each with the upstreams that \
                serve it. Read from the configuration: no upstream is asked.",
            "inputSchema": no_arguments,
            "outputSchema": {
                "type": "object",
                "properties": {"models": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "upstreams": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "upstreams"],
                }}},
                "required": ["models"],
            },
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false},
        },
        {
            "name": "upstream_status",
            "title": "Upstream status",
            "description": "Each upstream's health as the gateway's active checks see it \
                (healthy, unhealthy, initializing or unknown) and its last check's time, outcome \
                and detail. Useful when research fails.",
            "inputSchema": no_arguments,
            "outputSchema": {
                "type": "object",
                "properties": {
                    "healthy": {"type": "integer", "minimum": 0},
                    "total": {"type": "integer", "minimum": 0},
                    "upstreams": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string", "enum": ["openai", "runpod_queue", "runpod_load_balancer"]},
                            "model": {"type": "string"},
                            "health": {"type": "string", "enum": ["unknown", "healthy", "initializing", "unhealthy"]},
                            "last_check": {
                                "type": ["object", "null"],
                                "properties": {
                                    "at": {"type": "string"},
                                    "outcome": {"type": "string", "enum": ["up", "initializing", "down"]},
                                    "detail": {"type": "string"},
                                },
                                "required": ["at", "outcome", "detail"],
                            },
                        },
                        "required": ["name", "kind", "model", "health", "last_check"],
                    }},
                },
                "required": ["healthy", "total", "upstreams"],
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false},
        },
    ]})
}

/// A validated `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    Research(ResearchRequest),
    ListModels,
    UpstreamStatus,
}

/// The metric label of a tool name: known tools only.
pub(crate) fn tool_label(name: &str) -> &'static str {
    match name {
        "research" => "research",
        "list_models" => "list_models",
        "upstream_status" => "upstream_status",
        _ => "other",
    }
}

/// Reads `tools/call` params. Unknown tools and arguments that fail the
/// tool's validation are -32602 (invalid params), with the field errors of
/// `/v1/research` in `data`.
pub fn parse_tool_call(params: Option<&Map<String, Value>>) -> Result<ToolCall, RpcError> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs params.name, a tool name"))?;
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
                "arguments of tool {name:?} must be an object"
            )));
        }
    };
    match name {
        "research" => {
            // The very validation of /v1/research, on the same bytes it would read.
            let body = serde_json::to_vec(&Value::Object(arguments)).unwrap_or_default();
            match ResearchRequest::parse(&body) {
                Ok(request) => Ok(ToolCall::Research(request)),
                Err(Rejection::Invalid(errors)) => Err(invalid_arguments(name, errors)),
                Err(Rejection::MalformedJson(why)) => Err(RpcError::new(
                    INTERNAL_ERROR,
                    format!("arguments could not be re-read: {why}"),
                )),
            }
        }
        "list_models" => Ok(ToolCall::ListModels),
        "upstream_status" => Ok(ToolCall::UpstreamStatus),
        _ => Err(RpcError {
            data: Some(json!({"tools": ["research", "list_models", "upstream_status"]})),
            ..RpcError::invalid_params(format!("Unknown tool: {name:?}"))
        }),
    }
}

/// -32602 with every field error: the messages joined in `message`, the
/// pydantic-style errors (located under `arguments`) in `data`.
pub(crate) fn invalid_arguments(tool: &str, mut errors: Vec<FieldError>) -> RpcError {
    for error in &mut errors {
        if error.loc.first().is_some_and(|l| l == "body") {
            error.loc[0] = "arguments".into();
        }
    }
    let messages = errors
        .iter()
        .map(|e| match e.loc.get(1) {
            Some(field) => format!("{field}: {}", e.msg),
            None => e.msg.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    RpcError {
        data: Some(json!({"tool": tool, "errors": errors})),
        ..RpcError::invalid_params(format!("Invalid arguments for tool {tool:?}: {messages}"))
    }
}

/// A successful tool result whose text is the structured content as JSON,
/// as the tools specification recommends for older clients.
pub(crate) fn structured_result(structured: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// The `research` result: the answer as text, the rest as structured content;
/// a failure is a tool error (`isError`) whose text gives the HTTP status
/// `/v1/research` would have answered and why.
pub fn research_result(outcome: &Result<ResearchAnswer, ResearchFailure>) -> Value {
    match outcome {
        Ok(answer) => json!({
            "content": [{"type": "text", "text": answer.result}],
            "structuredContent": {
                "result": answer.result,
                "model": answer.model,
                "tokens_used": answer.tokens_used,
                "latency_ms": answer.latency_ms,
                "timestamp": answer.timestamp,
                "upstream": answer.upstream,
            },
            "isError": false,
        }),
        Err(failure) => {
            let reason = http::StatusCode::from_u16(failure.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut text = format!(
                "Research failed: {} {reason}: {}",
                failure.status, failure.detail
            );
            if let Some(retry_after) = &failure.retry_after {
                text.push_str(&format!(" (retry after {retry_after} s)"));
            }
            json!({"content": [{"type": "text", "text": text}], "isError": true})
        }
    }
}

/// The `list_models` result: each distinct model, in configuration order,
/// with the upstreams that serve it.
pub fn list_models_result(pool: &Pool) -> Value {
    let mut models: Vec<(&str, Vec<&str>)> = Vec::new();
    for upstream in pool.upstreams() {
        match models.iter_mut().find(|(m, _)| *m == upstream.model) {
            Some((_, names)) => names.push(&upstream.name),
            None => models.push((&upstream.model, vec![&upstream.name])),
        }
    }
    let models: Vec<Value> = models
        .into_iter()
        .map(|(id, upstreams)| json!({"id": id, "upstreams": upstreams}))
        .collect();
    structured_result(json!({ "models": models }))
}

/// The `upstream_status` result. Names, models and health only: no URL, no key.
pub fn upstream_status_result(pool: &Pool) -> Value {
    let upstreams: Vec<Value> = pool
        .upstreams()
        .iter()
        .map(|u| {
            let last_check = u.last_check().map(|check| {
                // Check details never hold a key; scrub anyway, as error texts are.
                let detail = crate::routes::scrub_key(&check.detail, u.api_key());
                json!({
                    "at": crate::routes::iso_time(check.at),
                    "outcome": check.outcome.as_str(),
                    "detail": detail,
                })
            });
            json!({
                "name": u.name,
                "kind": u.kind.as_str(),
                "model": u.model,
                "health": u.health().as_str(),
                "last_check": last_check,
            })
        })
        .collect();
    structured_result(json!({
        "healthy": pool.healthy_count(),
        "total": pool.upstreams().len(),
        "upstreams": upstreams,
    }))
}

/// What the tools run on: the same research service (and cache) as
/// `/v1/research`, the pool, and the metrics.
pub struct Tools<'a> {
    pub research: &'a ResearchService,
    pub pool: &'a Pool,
    pub metrics: &'a Metrics,
}

/// Runs a validated tool call; research goes through the shared service.
/// The upstream and the upstream tokens (none for a cached answer) each
/// tool's answer cost: `(result, upstream, tokens)`.
pub(crate) async fn run_tool(
    tools: &Tools<'_>,
    call: ToolCall,
) -> (Value, Option<String>, Option<u64>) {
    match call {
        ToolCall::Research(request) => {
            let researched = tools.research.answer(&request, false).await;
            let cached = researched.cache == Some(super::super::research::CacheOutcome::Hit);
            let (upstream, tokens) = match &researched.outcome {
                Ok(answer) => (
                    Some(answer.upstream.clone()),
                    (!cached).then_some(answer.tokens_used),
                ),
                Err(failure) => (failure.upstream.clone(), None),
            };
            (research_result(&researched.outcome), upstream, tokens)
        }
        ToolCall::ListModels => (list_models_result(tools.pool), None, None),
        ToolCall::UpstreamStatus => (upstream_status_result(tools.pool), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamConfig};
    use crate::pool::CheckOutcome;

    fn call(params: Value) -> Result<ToolCall, RpcError> {
        parse_tool_call(params.as_object())
    }

    #[test]
    fn research_arguments_are_validated_like_v1_research() {
        assert_eq!(
            call(json!({"name": "research", "arguments": {"query": "q"}})).unwrap(),
            ToolCall::Research(ResearchRequest {
                query: "q".into(),
                max_tokens: 2000,
                temperature: 0.7
            })
        );
        let error =
            call(json!({"name": "research", "arguments": {"max_tokens": 50, "temperature": 3}}))
                .unwrap_err();
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(
            error.message,
            "Invalid arguments for tool \"research\": query: Field required; max_tokens: Input \
             should be greater than or equal to 100; temperature: Input should be less than or \
             equal to 2.0"
        );
        let data = error.data.unwrap();
        assert_eq!(data["tool"], "research");
        assert_eq!(data["errors"][0]["loc"], json!(["arguments", "query"]));
        assert_eq!(data["errors"][1]["type"], "greater_than_equal");
        assert_eq!(
            call(json!({"name": "research"})).unwrap_err().code,
            INVALID_PARAMS,
            "no arguments: query missing"
        );
        assert_eq!(
            call(json!({"name": "research", "arguments": "q"}))
                .unwrap_err()
                .code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn unknown_tools_and_missing_names_are_invalid_params() {
        let error = call(json!({"name": "nope"})).unwrap_err();
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(error.message, "Unknown tool: \"nope\"");
        assert_eq!(call(json!({})).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse_tool_call(None).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(
            call(json!({"name": "list_models", "arguments": {}})).unwrap(),
            ToolCall::ListModels
        );
        assert_eq!(
            call(json!({"name": "upstream_status"})).unwrap(),
            ToolCall::UpstreamStatus
        );
    }

    #[test]
    fn every_tool_has_object_schemas_and_research_uses_the_route_constants() {
        let list = tools_list();
        let tools = list["tools"].as_array().unwrap();
        let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["research", "list_models", "upstream_status"]);
        for tool in tools {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
            assert!(tool["description"].as_str().unwrap().len() > 20);
        }
        let properties = &tools[0]["inputSchema"]["properties"];
        assert_eq!(properties["query"]["maxLength"], 5000);
        assert_eq!(properties["max_tokens"]["minimum"], 100);
        assert_eq!(properties["max_tokens"]["maximum"], 4000);
        assert_eq!(properties["max_tokens"]["default"], 2000);
        assert_eq!(properties["temperature"]["maximum"], 2.0);
        assert_eq!(properties["temperature"]["default"], 0.7);
    }

    #[test]
    fn research_failures_are_tool_errors_with_the_status() {
        let failure = ResearchFailure {
            status: 429,
            detail: "vLLM backend a is rate limited: slow down".into(),
            retry_after: Some("3".into()),
            upstream: Some("a".into()),
        };
        let result = research_result(&Err(failure));
        assert_eq!(result["isError"], true);
        assert_eq!(
            result["content"][0]["text"],
            "Research failed: 429 Too Many Requests: vLLM backend a is rate limited: slow down \
             (retry after 3 s)"
        );
        let answer = ResearchAnswer {
            result: "the answer".into(),
            model: "m".into(),
            tokens_used: 12,
            latency_ms: 34,
            timestamp: "2026-01-01T00:00:00.000000+00:00".into(),
            upstream: "a".into(),
        };
        let result = research_result(&Ok(answer));
        assert_eq!(result["isError"], false);
        assert_eq!(result["content"][0]["text"], "the answer");
        assert_eq!(result["structuredContent"]["tokens_used"], 12);
        assert_eq!(result["structuredContent"]["upstream"], "a");
    }

    fn pool() -> Pool {
        let upstream = |name: &str, model: Option<&str>| UpstreamConfig {
            name: name.into(),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            api_key: Some(format!("sk-secret-{name}")),
            model: model.map(str::to_string),
            ..UpstreamConfig::default()
        };
        let config = Config {
            upstreams: vec![
                upstream("a", None),
                upstream("b", Some("other")),
                upstream("c", None),
            ],
            ..Config::default()
        };
        Pool::from_config(&config, std::sync::Arc::new(crate::metrics::Metrics::new())).unwrap()
    }

    #[test]
    fn models_are_deduplicated_with_their_upstreams() {
        let result = list_models_result(&pool());
        assert_eq!(
            result["structuredContent"],
            json!({"models": [
                {"id": "meta-llama/Llama-3.1-8B-Instruct", "upstreams": ["a", "c"]},
                {"id": "other", "upstreams": ["b"]},
            ]})
        );
        let text: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, result["structuredContent"]);
    }

    #[test]
    fn upstream_status_shows_health_and_never_a_key() {
        let pool = pool();
        pool.upstreams()[0].observe_check(
            CheckOutcome::Down,
            "HTTP 401 for key sk-secret-a".into(),
            1,
            1,
        );
        pool.upstreams()[1].observe_check(CheckOutcome::Up, "HTTP 200".into(), 1, 1);
        let result = upstream_status_result(&pool);
        let status = &result["structuredContent"];
        assert_eq!(
            (status["healthy"].clone(), status["total"].clone()),
            (json!(1), json!(3))
        );
        assert_eq!(status["upstreams"][0]["health"], "unhealthy");
        assert_eq!(status["upstreams"][0]["last_check"]["outcome"], "down");
        assert_eq!(
            status["upstreams"][0]["last_check"]["detail"],
            "HTTP 401 for key [redacted]"
        );
        assert_eq!(status["upstreams"][1]["health"], "healthy");
        assert_eq!(status["upstreams"][2]["health"], "unknown");
        assert_eq!(status["upstreams"][2]["last_check"], Value::Null);
        assert!(!result.to_string().contains("sk-secret"));
    }
}
