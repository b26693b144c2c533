//! Health (`/livez`, `/readyz`) and Prometheus (`/metrics`) over TCP, for the kubelet's probes
//! and for scraping. Calico serves health on 9099 and metrics on 9091; so do we by default.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::endpoints::Endpoints;
use crate::metrics::Metrics;

/// Live while the process serves requests at all.
async fn livez() -> &'static str {
    "ok\n"
}

/// Ready when the datastore answers and a pool is usable (the same test as CNI STATUS).
async fn readyz(State(ep): State<Arc<Endpoints>>) -> impl IntoResponse {
    let st = ep.status().await;
    if st.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", st.reason),
        )
    }
}

pub fn health_router(endpoints: Arc<Endpoints>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(endpoints)
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

pub fn metrics_router(metrics_: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(metrics_)
}
