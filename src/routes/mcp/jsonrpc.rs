//! JSON-RPC 2.0 messages: reading one, and the result and error envelopes.

use super::*;

// ---------------------------------------------------------------------------
// JSON-RPC

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// Low-cardinality outcome label for the metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self.code {
            PARSE_ERROR => "parse_error",
            INVALID_REQUEST => "invalid_request",
            METHOD_NOT_FOUND => "method_not_found",
            INVALID_PARAMS => "invalid_params",
            _ => "error",
        }
    }
}

/// One JSON-RPC message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Map<String, Value>>,
    },
    Notification {
        method: String,
    },
    /// An answer to a server request; this server sends none, so it is only acknowledged.
    Response,
}

/// A body that is not one valid JSON-RPC message: the id to answer (null when
/// none could be read) and the error.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub id: Value,
    pub error: RpcError,
}

/// Reads one JSON-RPC 2.0 message as MCP uses them: ids are strings or
/// integers, never null; params, when present, are an object. Batches were
/// removed from MCP in 2025-06-18 and are refused as invalid requests.
pub fn parse_message(body: &[u8]) -> Result<Message, Box<Unreadable>> {
    let unreadable = |id: Value, code: i64, message: String| {
        Box::new(Unreadable {
            id,
            error: RpcError::new(code, message),
        })
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| unreadable(Value::Null, PARSE_ERROR, format!("Parse error: {e}")))?;
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(unreadable(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: batches are not supported (MCP removed JSON-RPC batching in \
                 2025-06-18); send one message per request"
                    .into(),
            ));
        }
        _ => {
            return Err(unreadable(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message is an object".into(),
            ));
        }
    };
    let invalid =
        |id: Value, why: &str| unreadable(id, INVALID_REQUEST, format!("Invalid Request: {why}"));
    let id = match object.get("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id.clone()),
        Some(id @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(id.clone()),
        Some(_) => {
            return Err(invalid(
                Value::Null,
                "\"id\" must be a string or an integer",
            ));
        }
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(answer_id, "\"jsonrpc\" must be \"2.0\""));
    }
    match (object.get("method"), id) {
        (Some(Value::String(method)), id) => {
            let params = match object.get("params") {
                None | Some(Value::Null) => None,
                Some(Value::Object(params)) => Some(params.clone()),
                Some(_) => return Err(invalid(answer_id, "\"params\" must be an object")),
            };
            Ok(match id {
                Some(id) => Message::Request {
                    id,
                    method: method.clone(),
                    params,
                },
                None => Message::Notification {
                    method: method.clone(),
                },
            })
        }
        (Some(_), _) => Err(invalid(answer_id, "\"method\" must be a string")),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response)
        }
        (None, _) => Err(invalid(
            answer_id,
            "a message needs a \"method\" (request or notification) or an \"id\" with a \
             \"result\" or \"error\" (response)",
        )),
    }
}

pub(crate) fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub(crate) fn rpc_error(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Message {
        parse_message(body.as_bytes()).unwrap()
    }

    fn refused(body: &str) -> (Value, i64) {
        let e = parse_message(body.as_bytes()).unwrap_err();
        (e.id, e.error.code)
    }

    #[test]
    fn messages_are_classified() {
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Message::Request {
                id: json!(1),
                method: "ping".into(),
                params: None
            }
        );
        assert!(matches!(
            request(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#),
            Message::Request {
                params: Some(_),
                ..
            }
        ));
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Message::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#),
            Message::Response
        );
    }

    #[test]
    fn broken_messages_get_the_json_rpc_codes() {
        assert_eq!(refused("{"), (Value::Null, PARSE_ERROR));
        assert_eq!(refused(""), (Value::Null, PARSE_ERROR));
        assert_eq!(
            refused(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(refused("42"), (Value::Null, INVALID_REQUEST));
        assert_eq!(
            refused(r#"{"id":1,"method":"ping"}"#),
            (json!(1), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":"x","method":3}"#),
            (json!("x"), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":2,"method":"ping","params":[1]}"#),
            (json!(2), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":3}"#),
            (json!(3), INVALID_REQUEST)
        );
    }
}
