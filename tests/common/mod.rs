//! Test support in one place, for every test in `tests/` (`mod common;`) and
//! every benchmark in `benches/` (`#[path = "../tests/common/mod.rs"] mod common;`):
//!
//! - [`ports`]: ports without a bind, drop and rebind race;
//! - [`gateway`]: configurations, simulated upstreams, gateways in this process, a warm pool;
//! - [`process`]: the gateway binary as a child process, temporary directories, readiness polls;
//! - [`http`]: requests to a gateway and their answers, JSON bodies;
//! - [`sse`]: streamed answers and their events;
//! - [`raw`]: upstreams over raw sockets, served byte by byte;
//! - [`mcp`]: an MCP client over HTTP: sessions, requests, tool calls;
//! - [`load`]: concurrent research traffic and who answered it;
//! - [`leaks`]: descriptor counts and the leak check;
//! - [`redis`]: a real `redis-server` on a held port, killed and restarted at will.
//!
//! Every server binds 127.0.0.1 on an ephemeral port that stays bound.
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod http;
pub mod leaks;
pub mod load;
pub mod mcp;
pub mod ports;
pub mod process;
pub mod raw;
pub mod redis;
pub mod sse;

pub use gateway::*;
pub use http::*;
pub use leaks::*;
pub use load::*;
pub use ports::*;
pub use process::*;
pub use sse::*;
// Not glob-imported: `mcp::post` and `mcp::call` would shadow other helpers.
