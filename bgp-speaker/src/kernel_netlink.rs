//! [`RouteTable`] over an rtnetlink socket: the only place the kernel sync does I/O.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::batch::BatchSocket;
use super::msg::{parse_route, RouteOp, RouteRequest};
use super::{send_each, InstalledRoute, KernelError, NetlinkFailure, RouteTable};

/// A netlink route socket. Network namespaces are per thread and a socket stays in the one it
/// was opened in: open it on the thread (and runtime) that is in the node's namespace.
#[derive(Debug)]
pub struct RtNetlinkTable {
    handle: Handle,
    /// Batched writes; `None` when the socket could not be opened (then one at a time).
    batch: Option<Arc<BatchSocket>>,
    /// The connection task when this value spawned it; aborted on drop.
    connection: Option<JoinHandle<()>>,
}

impl RtNetlinkTable {
    /// Opens a socket in the calling thread's network namespace and spawns its connection on
    /// the current tokio runtime (panics outside one, like `tokio::spawn`).
    pub fn connect() -> Result<Self, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        Ok(Self {
            handle,
            batch: open_batch(),
            connection: Some(tokio::spawn(conn)),
        })
    }

    /// Over a connection someone else runs.
    pub fn from_handle(handle: Handle) -> Self {
        Self {
            handle,
            batch: open_batch(),
            connection: None,
        }
    }
}

/// The batch socket, in the calling thread's namespace like the handle's.
fn open_batch() -> Option<Arc<BatchSocket>> {
    BatchSocket::open()
        .map_err(|e| tracing::warn!(error = %e, "no batched netlink socket; writing routes one at a time"))
        .ok()
}

impl Drop for RtNetlinkTable {
    fn drop(&mut self) {
        if let Some(c) = self.connection.take() {
            c.abort();
        }
    }
}

#[async_trait]
impl RouteTable for RtNetlinkTable {
    async fn dump_ours(&self, table: u32) -> Result<Vec<InstalledRoute>, NetlinkFailure> {
        let mut out = Vec::new();
        // Without NETLINK_GET_STRICT_CHK the kernel dumps every table of the family; the
        // parser keeps ours.
        for dump in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(dump)
                .execute()
                .try_collect()
                .await?;
            out.extend(routes.iter().filter_map(|m| parse_route(m, table)));
        }
        Ok(out)
    }

    async fn send(&self, request: &RouteRequest) -> Result<(), NetlinkFailure> {
        let payload = match request.op {
            RouteOp::Create | RouteOp::Replace => {
                RouteNetlinkMessage::NewRoute(request.message.clone())
            }
            RouteOp::Delete => RouteNetlinkMessage::DelRoute(request.message.clone()),
        };
        let mut msg = NetlinkMessage::from(payload);
        msg.header.flags = request.flags();
        let mut handle = self.handle.clone();
        let mut answers = handle.request(msg)?;
        while let Some(answer) = answers.next().await {
            // An ACK is an error message without a code.
            if let NetlinkPayload::Error(e) = answer.payload {
                if e.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(e).into());
                }
            }
        }
        Ok(())
    }

    async fn send_batch(&self, requests: &[RouteRequest]) -> Vec<Result<(), NetlinkFailure>> {
        match &self.batch {
            Some(b) => b.send(requests).await,
            None => send_each(self, requests).await,
        }
    }
}
