//! An EC2 endpoint in front of another one (moto) that answers chosen actions with EC2's
//! errors: throttling, limits and a full subnet, which moto never returns. Everything else is
//! forwarded unchanged. Tests and the lab point an agent's `--ec2-endpoint` at it, so the
//! agent meets the errors through the real SDK, retries and all.
//!
//! EC2's Query API names the action in the form body (`Action=CreateNetworkInterface`); an
//! injected error is EC2's XML error document with HTTP 400 (503 for throttling, as EC2
//! answers `RequestLimitExceeded`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// One injected error.
#[derive(Debug, Clone)]
struct Fault {
    action: String,
    code: String,
    /// How many more requests get it; `None` is until cleared.
    remaining: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Vec<Fault>>,
    injected: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl FaultProxy {
    /// Listens on `bind` and forwards to `upstream` (moto's address).
    pub async fn start(bind: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Vec::new()),
            injected: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FaultProxy {
            addr,
            shared,
            _stop: stop,
        })
    }

    /// `http://ADDR`, for an EC2 endpoint override.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `times` requests for `action` (all of them with `None`) with EC2
    /// error `code`.
    pub fn fail(&self, action: &str, code: &str, times: Option<u32>) {
        self.shared.faults.lock().expect("faults lock").push(Fault {
            action: action.to_string(),
            code: code.to_string(),
            remaining: times,
        });
    }

    /// Removes every fault still pending.
    pub fn clear(&self) {
        self.shared.faults.lock().expect("faults lock").clear();
    }

    /// Errors answered so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

/// The `Action` of a Query API form body.
fn action_of(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_string)
}

/// Takes one use of the first fault for `action`, if any.
fn take_fault(shared: &Shared, action: &str) -> Option<String> {
    let mut faults = shared.faults.lock().expect("faults lock");
    let i = faults.iter().position(|f| f.action == action)?;
    let code = faults[i].code.clone();
    if let Some(n) = faults[i].remaining.as_mut() {
        *n -= 1;
        if *n == 0 {
            faults.remove(i);
        }
    }
    Some(code)
}

fn error_response(code: &str, action: &str) -> Response {
    let status = if code == "RequestLimitExceeded" {
        503
    } else {
        400
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>injected by the test's fault proxy for {action}</Message></Error></Errors>\
         <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(Body::from(xml))
        .expect("a valid response")
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("reading the request: {e}")),
    };
    if let Some(action) = action_of(&body) {
        if let Some(code) = take_fault(&shared, &action) {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            return error_response(&code, &action);
        }
    }
    match forward(shared.upstream, parts, body).await {
        Ok(r) => r,
        Err(e) => bad_gateway(e),
    }
}

fn bad_gateway(why: String) -> Response {
    Response::builder()
        .status(502)
        .body(Body::from(why))
        .expect("a valid response")
}

async fn forward(
    upstream: SocketAddr,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connecting to {upstream}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {upstream}: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::from_parts(parts, Full::new(body));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("forwarding to {upstream}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading {upstream}'s answer: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_read_from_the_form_body() {
        assert_eq!(
            action_of(b"Action=CreateNetworkInterface&Version=2016-11-15&SubnetId=subnet-1")
                .as_deref(),
            Some("CreateNetworkInterface")
        );
        assert_eq!(action_of(b"Version=2016-11-15"), None);
    }

    #[test]
    fn a_counted_fault_runs_out_and_an_open_one_stays() {
        let shared = Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            faults: Mutex::new(Vec::new()),
            injected: AtomicU64::new(0),
        };
        shared.faults.lock().unwrap().push(Fault {
            action: "A".into(),
            code: "RequestLimitExceeded".into(),
            remaining: Some(2),
        });
        shared.faults.lock().unwrap().push(Fault {
            action: "B".into(),
            code: "InsufficientFreeAddressesInSubnet".into(),
            remaining: None,
        });
        assert!(take_fault(&shared, "A").is_some());
        assert!(take_fault(&shared, "A").is_some());
        assert!(take_fault(&shared, "A").is_none());
        for _ in 0..5 {
            assert_eq!(
                take_fault(&shared, "B").as_deref(),
                Some("InsufficientFreeAddressesInSubnet")
            );
        }
        assert!(take_fault(&shared, "C").is_none());
    }
}
