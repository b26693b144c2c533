//! Errors of pod wiring, and the problems CHECK reports.

use std::fmt;
use std::io;
use std::path::PathBuf;

use ipnet::IpNet;
use nix::errno::Errno;

use super::plan::{Neighbour, Route};

/// Which namespace something is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Node,
    Pod,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Node => "node netns",
            Side::Pod => "pod netns",
        })
    }
}

/// Why ADD, DEL or CHECK failed. `netns` fields read like "pod netns /run/netns/x".
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The request is unusable; nothing was touched.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidSpec {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path}: setns: {source}")]
    EnterNetns { path: PathBuf, source: Errno },
    /// The worker thread for a namespace could not be started or stopped early.
    #[error("worker thread for {netns}: {reason}")]
    Thread { netns: String, reason: String },
    /// A netlink request failed; `step` says what it was meant to do, with its input.
    #[error("{step} in {netns}: {source}")]
    Netlink {
        netns: String,
        step: String,
        source: io::Error,
    },
    #[error("{path} in {netns}: {source}")]
    Sysctl {
        netns: String,
        path: String,
        source: io::Error,
    },
    /// `CNI_IFNAME` is already taken inside the pod netns by an interface ADD did not create.
    #[error("interface {name} already exists in {netns}")]
    InterfaceExists { netns: String, name: String },
    /// The host veth name is taken in the node netns by something that is not a veth.
    #[error("{name} exists in {netns} and is not a veth; refusing to replace it")]
    NotAVeth { netns: String, name: String },
    /// The interface disappeared while ADD was configuring it.
    #[error("interface {name} vanished from {netns} during ADD")]
    Vanished { netns: String, name: String },
    /// ADD failed and removing what it had created failed as well.
    #[error("{cause}; rolling back also failed: {rollback}")]
    RollbackFailed {
        cause: Box<WiringError>,
        rollback: Box<WiringError>,
    },
    /// CHECK found the wiring incomplete.
    #[error("pod wiring is incomplete: {}", list(problems))]
    Check { problems: Vec<Problem> },
}

impl WiringError {
    /// The namespace does not exist (any more): its file is gone, or is no longer a namespace
    /// mount (`ip netns del` with a lingering file, a dead container's `/proc/PID/ns/net`).
    pub fn is_netns_gone(&self) -> bool {
        match self {
            WiringError::OpenNetns { source, .. } => source.kind() == io::ErrorKind::NotFound,
            WiringError::EnterNetns { source, .. } => *source == Errno::EINVAL,
            _ => false,
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One thing CHECK found missing or different from what ADD sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The interface does not exist.
    LinkMissing {
        side: Side,
        name: String,
    },
    /// The host-side name is taken by something that is not a veth.
    NotAVeth {
        side: Side,
        name: String,
    },
    LinkDown {
        side: Side,
        name: String,
    },
    Mtu {
        side: Side,
        name: String,
        expected: u32,
        actual: Option<u32>,
    },
    AddressMissing {
        side: Side,
        name: String,
        address: IpNet,
    },
    /// A main-table route through `name` is missing.
    RouteMissing {
        side: Side,
        name: String,
        route: Route,
    },
    /// A permanent neighbour entry on `name` is missing or points elsewhere.
    NeighbourMissing {
        side: Side,
        name: String,
        neighbour: Neighbour,
    },
    /// A sysctl under /proc/sys/net of the node netns has another value (`None`: unreadable).
    Sysctl {
        path: String,
        expected: String,
        actual: Option<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::LinkMissing { side, name } => write!(f, "{side}: interface {name} is missing"),
            Problem::NotAVeth { side, name } => write!(f, "{side}: {name} is not a veth"),
            Problem::LinkDown { side, name } => write!(f, "{side}: {name} is down"),
            Problem::Mtu {
                side,
                name,
                expected,
                actual,
            } => match actual {
                Some(actual) => write!(f, "{side}: {name} has MTU {actual}, expected {expected}"),
                None => write!(f, "{side}: {name} reports no MTU, expected {expected}"),
            },
            Problem::AddressMissing {
                side,
                name,
                address,
            } => write!(f, "{side}: address {address} on {name} is missing"),
            Problem::RouteMissing { side, name, route } => {
                write!(f, "{side}: route `{}` is missing", route.on(name))
            }
            Problem::NeighbourMissing {
                side,
                name,
                neighbour,
            } => write!(f, "{side}: neighbour `{neighbour} dev {name}` is missing"),
            Problem::Sysctl {
                path,
                expected,
                actual,
            } => match actual {
                Some(actual) => write!(f, "node netns: {path} is {actual}, expected {expected}"),
                None => write!(f, "node netns: {path} is unreadable, expected {expected}"),
            },
        }
    }
}
