//! The research request: validated exactly as the original's pydantic model
//! (every field's problems at once, its lax integers), and the OpenAI chat
//! completion it becomes.

use super::Reply;
use crate::routes::push_json_str;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

pub const QUERY_MAX_CHARS: usize = 5000;
pub const MAX_TOKENS_RANGE: (i64, i64) = (100, 4000);
pub const MAX_TOKENS_DEFAULT: i64 = 2000;
pub const TEMPERATURE_RANGE: (f64, f64) = (0.0, 2.0);
pub const TEMPERATURE_DEFAULT: f64 = 0.7;

/// A validated research request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearchRequest {
    pub query: String,
    pub max_tokens: i64,
    pub temperature: f64,
}

/// One entry of a FastAPI validation error (`{"detail": [...]}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

/// Why a research body was refused before any upstream was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// 400: the body is not JSON.
    MalformedJson(String),
    /// 422: JSON that breaks the schema.
    Invalid(Vec<FieldError>),
}

impl Rejection {
    pub fn reply(&self) -> Reply {
        match self {
            Rejection::MalformedJson(why) => {
                Reply::detail(400, format!("Malformed JSON in request body: {why}"))
            }
            Rejection::Invalid(errors) => Reply::json(422, &json!({ "detail": errors })),
        }
    }
}

impl ResearchRequest {
    /// Parses and validates a body as the original pydantic model did: every
    /// field's problems reported at once, extra fields ignored, integers given as
    /// whole floats or numeric strings accepted (pydantic's lax mode).
    pub fn parse(body: &[u8]) -> Result<ResearchRequest, Rejection> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Rejection::MalformedJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(Rejection::Invalid(vec![FieldError {
                kind: "model_attributes_type",
                loc: vec!["body".into()],
                msg: "Input should be a valid dictionary or object to extract fields from".into(),
                ctx: None,
            }]));
        };
        let mut errors = Vec::new();
        let query = validate_query(&fields, &mut errors);
        let max_tokens = validate_max_tokens(&fields, &mut errors);
        let temperature = validate_temperature(&fields, &mut errors);
        match (query, max_tokens, temperature) {
            (Some(query), Some(max_tokens), Some(temperature)) if errors.is_empty() => {
                Ok(ResearchRequest {
                    query,
                    max_tokens,
                    temperature,
                })
            }
            _ => Err(Rejection::Invalid(errors)),
        }
    }

    /// The OpenAI chat-completion body sent upstream:
    /// `{"model","messages":[{"role","content"}…],"max_tokens","temperature"}`,
    /// written directly (see `routes::push_json_str`).
    pub fn chat_body(&self, model: &str, system_prompt: Option<&str>) -> Bytes {
        let texts = model.len() + self.query.len() + system_prompt.map_or(0, str::len);
        let mut out = Vec::with_capacity(128 + texts);
        out.extend_from_slice(b"{\"model\":");
        push_json_str(&mut out, model);
        out.extend_from_slice(b",\"messages\":[");
        if let Some(system) = system_prompt {
            out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
            push_json_str(&mut out, system);
            out.extend_from_slice(b"},");
        }
        out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
        push_json_str(&mut out, &self.query);
        out.extend_from_slice(b"}],\"max_tokens\":");
        serde_json::to_writer(&mut out, &self.max_tokens).expect("a number serializes");
        out.extend_from_slice(b",\"temperature\":");
        serde_json::to_writer(&mut out, &self.temperature).expect("a number serializes");
        out.push(b'}');
        out.into()
    }
}

fn field_error(
    field: &str,
    kind: &'static str,
    msg: impl Into<String>,
    ctx: Option<Value>,
) -> FieldError {
    FieldError {
        kind,
        loc: vec!["body".into(), field.into()],
        msg: msg.into(),
        ctx,
    }
}

fn validate_query(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match fields.get("query") {
        None => {
            errors.push(field_error("query", "missing", "Field required", None));
            None
        }
        Some(Value::String(q)) => {
            // pydantic counts characters (code points), not bytes.
            let chars = q.chars().count();
            if chars < 1 {
                errors.push(field_error(
                    "query",
                    "string_too_short",
                    "String should have at least 1 character",
                    Some(json!({"min_length": 1})),
                ));
                None
            } else if chars > QUERY_MAX_CHARS {
                errors.push(field_error(
                    "query",
                    "string_too_long",
                    format!("String should have at most {QUERY_MAX_CHARS} characters"),
                    Some(json!({"max_length": QUERY_MAX_CHARS})),
                ));
                None
            } else {
                Some(q.clone())
            }
        }
        Some(_) => {
            errors.push(field_error(
                "query",
                "string_type",
                "Input should be a valid string",
                None,
            ));
            None
        }
    }
}

fn validate_max_tokens(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<i64> {
    const FIELD: &str = "max_tokens";
    let value = match fields.get(FIELD) {
        None => return Some(MAX_TOKENS_DEFAULT),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i as f64,
            (None, Some(f)) if f.fract() == 0.0 => f,
            _ => {
                errors.push(field_error(
                    FIELD,
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                    None,
                ));
                return None;
            }
        },
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => i as f64,
            Err(_) => {
                errors.push(field_error(
                    FIELD,
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                    None,
                ));
                return None;
            }
        },
        Some(_) => {
            errors.push(field_error(
                FIELD,
                "int_type",
                "Input should be a valid integer",
                None,
            ));
            return None;
        }
    };
    let (min, max) = MAX_TOKENS_RANGE;
    if value < min as f64 {
        errors.push(field_error(
            FIELD,
            "greater_than_equal",
            format!("Input should be greater than or equal to {min}"),
            Some(json!({"ge": min})),
        ));
        None
    } else if value > max as f64 {
        errors.push(field_error(
            FIELD,
            "less_than_equal",
            format!("Input should be less than or equal to {max}"),
            Some(json!({"le": max})),
        ));
        None
    } else {
        Some(value as i64)
    }
}

fn validate_temperature(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<f64> {
    const FIELD: &str = "temperature";
    let value = match fields.get(FIELD) {
        None => return Some(TEMPERATURE_DEFAULT),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => f,
            _ => {
                errors.push(field_error(
                    FIELD,
                    "float_parsing",
                    "Input should be a valid number, unable to parse string as a number",
                    None,
                ));
                return None;
            }
        },
        Some(_) => {
            errors.push(field_error(
                FIELD,
                "float_type",
                "Input should be a valid number",
                None,
            ));
            return None;
        }
    };
    let (min, max) = TEMPERATURE_RANGE;
    if value.is_nan() || value < min {
        errors.push(field_error(
            FIELD,
            "greater_than_equal",
            format!("Input should be greater than or equal to {min:.1}"),
            Some(json!({"ge": min})),
        ));
        None
    } else if value > max {
        errors.push(field_error(
            FIELD,
            "less_than_equal",
            format!("Input should be less than or equal to {max:.1}"),
            Some(json!({"le": max})),
        ));
        None
    } else {
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str) -> Vec<FieldError> {
        match ResearchRequest::parse(body.as_bytes()) {
            Err(Rejection::Invalid(e)) => e,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_and_extra_fields_are_ignored() {
        let r = ResearchRequest::parse(br#"{"query":"q","extra":1}"#).unwrap();
        assert_eq!((r.max_tokens, r.temperature), (2000, 0.7));
    }

    #[test]
    fn lax_integers_like_pydantic() {
        let r = ResearchRequest::parse(br#"{"query":"q","max_tokens":"150","temperature":"1.5"}"#)
            .unwrap();
        assert_eq!((r.max_tokens, r.temperature), (150, 1.5));
        let r = ResearchRequest::parse(br#"{"query":"q","max_tokens":300.0}"#).unwrap();
        assert_eq!(r.max_tokens, 300);
        assert_eq!(
            errors(r#"{"query":"q","max_tokens":300.5}"#)[0].kind,
            "int_from_float"
        );
        assert_eq!(
            errors(r#"{"query":"q","max_tokens":true}"#)[0].kind,
            "int_type"
        );
        assert_eq!(
            errors(r#"{"query":"q","max_tokens":"x"}"#)[0].kind,
            "int_parsing"
        );
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let e = errors(r#"{"max_tokens":99,"temperature":2.5}"#);
        let kinds: Vec<_> = e.iter().map(|e| (e.loc[1].as_str(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("query", "missing"),
                ("max_tokens", "greater_than_equal"),
                ("temperature", "less_than_equal")
            ]
        );
    }

    #[test]
    fn query_length_counts_characters() {
        let q = "é".repeat(QUERY_MAX_CHARS);
        assert!(ResearchRequest::parse(json!({ "query": q }).to_string().as_bytes()).is_ok());
        let q = "é".repeat(QUERY_MAX_CHARS + 1);
        assert_eq!(
            errors(&json!({ "query": q }).to_string())[0].kind,
            "string_too_long"
        );
    }

    #[test]
    fn chat_body_is_what_serde_writes() {
        // The body as serde wrote it before it was written directly.
        #[derive(Serialize)]
        struct Message<'a> {
            role: &'static str,
            content: &'a str,
        }
        #[derive(Serialize)]
        struct ChatBody<'a> {
            model: &'a str,
            messages: &'a [Message<'a>],
            max_tokens: i64,
            temperature: f64,
        }
        let mut runner = proptest::test_runner::TestRunner::default();
        let cases = (
            proptest::prelude::any::<String>(),
            "[ -~]{0,20}",
            proptest::option::of(proptest::prelude::any::<String>()),
            1i64..100_000,
            0.0f64..2.0,
        );
        runner
            .run(&cases, |(query, model, system, max_tokens, temperature)| {
                let request = ResearchRequest {
                    query: query.clone(),
                    max_tokens,
                    temperature,
                };
                let user = Message {
                    role: "user",
                    content: &query,
                };
                let mut messages = Vec::new();
                if let Some(system) = &system {
                    messages.push(Message {
                        role: "system",
                        content: system,
                    });
                }
                messages.push(user);
                let expected = serde_json::to_vec(&ChatBody {
                    model: &model,
                    messages: &messages,
                    max_tokens,
                    temperature,
                })
                .unwrap();
                let ours = request.chat_body(&model, system.as_deref());
                proptest::prop_assert_eq!(&ours[..], &expected[..]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn chat_body_has_the_system_prompt_first() {
        let r = ResearchRequest::parse(br#"{"query":"why?","max_tokens":100,"temperature":0}"#)
            .unwrap();
        let body: Value = serde_json::from_slice(&r.chat_body("m", Some("be brief"))).unwrap();
        assert_eq!(
            body,
            json!({"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"why?"}],"max_tokens":100,"temperature":0.0})
        );
    }
}
