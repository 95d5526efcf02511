//! context7-lb: a Pingora gateway in front of RunPod serverless vLLM and
//! OpenAI-compatible endpoints. The modules are public for `tests/` and `benches/`.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod guard;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod ports;
pub mod routes;
pub mod scope;
pub mod serve;
pub mod shared;
pub mod sim;
pub mod sse;
pub mod state;
pub mod task;
