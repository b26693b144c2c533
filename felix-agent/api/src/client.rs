//! Client of the agent API: HTTP/1.1 over the agent's Unix socket, one connection per call
//! (the CNI binary makes two or three calls in its short life).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::net::UnixStream;

use crate::types::*;

/// CNI's "try again later": the agent is not there (yet).
const CNI_TRY_AGAIN_LATER: u32 = 11;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("trellis-agent unreachable at {}: {reason}", socket.display())]
    Unreachable { socket: PathBuf, reason: String },

    #[error("trellis-agent at {} did not answer {path} within {after:?}", socket.display())]
    Timeout {
        socket: PathBuf,
        path: String,
        after: Duration,
    },

    /// The agent answered with an error.
    #[error("trellis-agent: {}", error.message)]
    Agent { status: u16, error: ApiError },

    #[error("trellis-agent at {} sent an unreadable answer to {path}: {reason}", socket.display())]
    Protocol {
        socket: PathBuf,
        path: String,
        reason: String,
    },
}

impl ClientError {
    /// The CNI error code a plugin should report for this failure.
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => CNI_TRY_AGAIN_LATER,
            Self::Agent { error, .. } => error.code,
            Self::Protocol { .. } => 5, // I/O failure
        }
    }
}

/// Async client; see [`AgentClient::blocking`] for the CNI binary's synchronous use.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    /// A client of the agent listening at `socket`, with a 10 s bound on each call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn add(&self, req: &AddRequest) -> Result<AddResponse, ClientError> {
        self.call(Method::POST, "/v1/cni/add", Some(req)).await
    }

    pub async fn endpoint(&self, req: &EndpointRequest) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(Method::POST, "/v1/cni/endpoint", Some(req))
            .await?;
        Ok(())
    }

    pub async fn del(&self, req: &DelRequest) -> Result<DelResponse, ClientError> {
        self.call(Method::POST, "/v1/cni/del", Some(req)).await
    }

    pub async fn gc(&self, req: &GcRequest) -> Result<GcResponse, ClientError> {
        self.call(Method::POST, "/v1/cni/gc", Some(req)).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/status", None).await
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                path: path.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            socket: self.socket.clone(),
            path: path.to_string(),
            reason,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    reason: e.to_string(),
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        // The connection task ends when the response is read and `sender` is dropped.
        let conn = tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "trellis-agent")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(e.to_string()))?;
        drop(sender);
        conn.abort();
        let body = body.to_bytes();
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()));
        }
        let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| ApiError {
            code: 5,
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        });
        Err(ClientError::Agent {
            status: status.as_u16(),
            error,
        })
    }

    /// A synchronous client for callers without a runtime (the CNI binary).
    pub fn blocking(self) -> std::io::Result<BlockingAgentClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingAgentClient {
            inner: self,
            runtime,
        })
    }
}

/// [`AgentClient`] driven by its own single-threaded runtime.
#[derive(Debug)]
pub struct BlockingAgentClient {
    inner: AgentClient,
    runtime: tokio::runtime::Runtime,
}

impl BlockingAgentClient {
    pub fn socket(&self) -> &Path {
        self.inner.socket()
    }

    pub fn add(&self, req: &AddRequest) -> Result<AddResponse, ClientError> {
        self.runtime.block_on(self.inner.add(req))
    }

    pub fn endpoint(&self, req: &EndpointRequest) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.endpoint(req))
    }

    pub fn del(&self, req: &DelRequest) -> Result<DelResponse, ClientError> {
        self.runtime.block_on(self.inner.del(req))
    }

    pub fn gc(&self, req: &GcRequest) -> Result<GcResponse, ClientError> {
        self.runtime.block_on(self.inner.gc(req))
    }

    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.runtime.block_on(self.inner.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_is_try_again_later_naming_the_socket() {
        let client = AgentClient::new("/nonexistent/trellis/agent.sock")
            .blocking()
            .unwrap();
        let err = client.status().unwrap_err();
        assert_eq!(err.cni_code(), 11);
        assert!(
            err.to_string().contains("/nonexistent/trellis/agent.sock"),
            "{err}"
        );
    }
}
