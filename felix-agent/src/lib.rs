//! trellis-agent: the node daemon. It owns the node's IPAM and endpoints and serves the CNI
//! plugin over a Unix socket.
//!
//! ```text
//!  trellis (CNI) --HTTP/unix--> api::router --> endpoints::Endpoints --> NodeIpam --> etcd
//!                                                      \--> WorkloadEndpoints --------> etcd
//! ```

pub mod api;
pub mod autodetect;
pub mod bgp;
pub mod dataplane;
pub mod endpoints;
pub mod health;
pub mod metrics;
pub mod policy;
pub mod register;
pub mod vpc;
pub mod watch_cache;
