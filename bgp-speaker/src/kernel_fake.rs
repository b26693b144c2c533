//! An in-memory routing table for unit tests of [`KernelSync`](super::KernelSync). It decodes
//! the requests it gets with the same parser the real dump uses and mimics the kernel where it
//! matters here: an exclusive create fails with `EEXIST` on a taken (table, prefix, metric)
//! slot whatever the protocol, a replace overwrites that slot whatever the protocol (which is
//! why the sync replaces only its own routes), and a delete matches protocol and metric.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::IpNet;

use super::msg::{decode_route, RouteOp, RouteRequest};
use super::{InstalledRoute, KernelRoute, NetlinkFailure, RouteTable, RTPROT_TRELLIS_BGP};

const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const EINVAL: i32 = 22;

/// (table, prefix, metric) -> (protocol, route).
pub(crate) type Slots = BTreeMap<(u32, IpNet, u32), (u8, KernelRoute)>;

#[derive(Debug, Default)]
pub(crate) struct FakeKernel {
    pub routes: Slots,
    /// Every request received, failed ones included.
    pub sent: Vec<RouteRequest>,
    pub dumps: usize,
    /// The errno a request fails with, if any.
    pub fail: Option<fn(&RouteRequest) -> Option<i32>>,
    pub fail_dumps: bool,
}

#[derive(Debug, Default)]
pub(crate) struct FakeRouteTable {
    inner: Mutex<FakeKernel>,
}

impl FakeRouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        self.inner.lock().expect("fake kernel lock")
    }

    /// A route some other owner installed (or ours from a previous incarnation, with
    /// `proto == RTPROT_TRELLIS_BGP`).
    pub fn insert(&self, table: u32, proto: u8, metric: u32, route: KernelRoute) {
        self.kernel()
            .routes
            .insert((table, route.prefix, metric), (proto, route));
    }

    /// The `what` of every request sent, then forgets them.
    pub fn take_sent(&self) -> Vec<String> {
        self.kernel().sent.drain(..).map(|r| r.what).collect()
    }

    pub fn routes(&self) -> Slots {
        self.kernel().routes.clone()
    }
}

#[async_trait]
impl RouteTable for FakeRouteTable {
    async fn dump_ours(&self, table: u32) -> Result<Vec<InstalledRoute>, NetlinkFailure> {
        let mut k = self.kernel();
        k.dumps += 1;
        if k.fail_dumps {
            return Err(NetlinkFailure {
                errno: None,
                detail: "dump refused by the fake".into(),
            });
        }
        Ok(k.routes
            .iter()
            .filter(|((t, _, _), (proto, _))| *t == table && *proto == RTPROT_TRELLIS_BGP)
            .map(|((_, _, metric), (_, route))| InstalledRoute {
                route: route.clone(),
                metric: *metric,
            })
            .collect())
    }

    async fn send(&self, request: &RouteRequest) -> Result<(), NetlinkFailure> {
        let mut k = self.kernel();
        k.sent.push(request.clone());
        if let Some(errno) = k.fail.and_then(|f| f(request)) {
            return Err(NetlinkFailure::errno(errno));
        }
        let (table, proto, r) =
            decode_route(&request.message).ok_or(NetlinkFailure::errno(EINVAL))?;
        let key = (table, r.route.prefix, r.metric);
        match request.op {
            RouteOp::Create if k.routes.contains_key(&key) => Err(NetlinkFailure::errno(EEXIST)),
            RouteOp::Create | RouteOp::Replace => {
                k.routes.insert(key, (proto, r.route));
                Ok(())
            }
            RouteOp::Delete => match k.routes.get(&key) {
                Some((p, _)) if *p == proto => {
                    k.routes.remove(&key);
                    Ok(())
                }
                _ => Err(NetlinkFailure::errno(ESRCH)),
            },
        }
    }
}
