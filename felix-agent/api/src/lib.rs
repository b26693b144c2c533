//! The node agent's local API, spoken by the `trellis` CNI plugin over a Unix socket
//! (HTTP/1.1 + JSON). This crate holds only the message types and a small client, so the CNI
//! binary stays thin and never links the agent.
//!
//! | call | method, path | body -> answer |
//! |---|---|---|
//! | allocate addresses for a pod interface | `POST /v1/cni/add` | [`AddRequest`] -> [`AddResponse`] |
//! | record the wired endpoint | `POST /v1/cni/endpoint` | [`EndpointRequest`] -> `{}` |
//! | release a pod interface | `POST /v1/cni/del` | [`DelRequest`] -> [`DelResponse`] |
//! | release everything not listed | `POST /v1/cni/gc` | [`GcRequest`] -> [`GcResponse`] |
//! | readiness | `GET /v1/status` | -> [`StatusResponse`] |
//!
//! Failures come back as a non-2xx status with an [`ApiError`] body carrying the CNI error code
//! the plugin should report.

mod client;
mod types;

pub use client::{AgentClient, BlockingAgentClient, ClientError};
pub use types::*;

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/trellis/agent.sock";
