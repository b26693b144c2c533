//! The agent API server: HTTP/1.1 + JSON on a Unix socket (axum), see `trellis_agent_api`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::UnixListener;
use trellis_agent_api::{
    AddRequest, AddResponse, ApiError, DelRequest, DelResponse, EndpointRequest, GcRequest,
    GcResponse, StatusResponse,
};

use crate::endpoints::{code, Endpoints};
use crate::metrics::{Metrics, Op};

/// An [`ApiError`] as an HTTP answer: 503 for "try again later", 500 otherwise.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = if self.0.code == code::TRY_AGAIN_LATER {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, Json(self.0)).into_response()
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub endpoints: Arc<Endpoints>,
    pub metrics: Arc<Metrics>,
}

type Shared = State<AppState>;

/// Runs `f`, recording its latency and result under `op`.
async fn timed<T>(
    st: &AppState,
    op: Op,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, Failure> {
    let started = Instant::now();
    let res = f.await;
    st.metrics.observe(op, res.is_ok(), started.elapsed());
    if let Err(e) = &res {
        tracing::warn!(?op, code = e.code, error = %e.message, "request failed");
    }
    res.map_err(Failure)
}

async fn add(State(st): Shared, Json(req): Json<AddRequest>) -> Result<Json<AddResponse>, Failure> {
    let out = timed(&st, Op::Add, st.endpoints.add(&req)).await?;
    st.metrics
        .addresses_allocated
        .inc_by(out.addresses.len() as u64);
    tracing::info!(
        container = %req.attachment.container_id,
        pod = %format!("{}/{}", req.pod.namespace, req.pod.name),
        addresses = ?out.addresses,
        "add"
    );
    Ok(Json(out))
}

async fn endpoint(
    State(st): Shared,
    Json(req): Json<EndpointRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    timed(&st, Op::Endpoint, st.endpoints.endpoint(&req)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn del(State(st): Shared, Json(req): Json<DelRequest>) -> Result<Json<DelResponse>, Failure> {
    let out = timed(&st, Op::Del, st.endpoints.del(&req)).await?;
    st.metrics
        .addresses_released
        .inc_by(out.released.len() as u64);
    Ok(Json(out))
}

async fn gc(State(st): Shared, Json(req): Json<GcRequest>) -> Result<Json<GcResponse>, Failure> {
    timed(&st, Op::Gc, st.endpoints.gc(&req)).await.map(Json)
}

async fn status(State(st): Shared) -> Json<StatusResponse> {
    let started = Instant::now();
    let out = st.endpoints.status().await;
    st.metrics.observe(Op::Status, true, started.elapsed());
    Json(out)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/cni/add", post(add))
        .route("/v1/cni/endpoint", post(endpoint))
        .route("/v1/cni/del", post(del))
        .route("/v1/cni/gc", post(gc))
        .route("/v1/status", get(status))
        .with_state(state)
}

/// Binds the API socket: creates the directory, replaces a stale socket file left by a previous
/// run, and makes it accessible to root only (the CNI runs as root).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API until the future is dropped.
pub async fn serve(listener: UnixListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
