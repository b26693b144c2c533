//! The compiled form of a policy: resolved against a [`Model`](crate::Model), so every
//! selector is a set of endpoints and every named port a map from endpoint to number. The
//! nftables rendering and `policy trace` both read this and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{EndpointKey, Proto};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Stop evaluating policies; the namespace default (allow) decides.
    Pass,
    /// Record the packet and go on to the next rule.
    Log,
}

/// Which policy, for traces and chain names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyId {
    /// A Kubernetes NetworkPolicy: namespace and name.
    Namespaced { namespace: String, name: String },
    /// A GlobalNetworkPolicy.
    Global { name: String },
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyId::Namespaced { namespace, name } => {
                write!(f, "NetworkPolicy {namespace}/{name}")
            }
            PolicyId::Global { name } => write!(f, "GlobalNetworkPolicy {name}"),
        }
    }
}

/// Calico's order of Kubernetes NetworkPolicies: after GlobalNetworkPolicies of lower order.
pub const NETWORK_POLICY_ORDER: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    /// Lower first; `None` (a GlobalNetworkPolicy without one) after every number.
    pub order: Option<f64>,
    /// `None`: the policy does not govern this direction (not in its types).
    pub ingress: Option<PolicyDirection>,
    pub egress: Option<PolicyDirection>,
}

impl CompiledPolicy {
    pub fn direction(&self, d: Direction) -> Option<&PolicyDirection> {
        match d {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    /// The evaluation order: `order` (missing last), then the id.
    pub fn sort_key(&self) -> (OrderKey, &PolicyId) {
        (OrderKey(self.order), &self.id)
    }
}

/// `Option<f64>` ordered with `None` last and NaN never produced by the compiler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderKey(pub Option<f64>);

impl Eq for OrderKey {}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
}

/// One direction of a policy: the endpoints it applies to and its rules, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDirection {
    pub selected: BTreeSet<EndpointKey>,
    pub rules: Vec<CompiledRule>,
}

/// One rule: every match present must hold (the NetworkPolicy ones, `peers` and `ports`, and
/// the GlobalNetworkPolicy ones after them; a compiler fills one group and leaves the other
/// empty).
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// Position in the policy's rules of this direction (for traces).
    pub index: usize,
    pub action: Action,
    /// The other end of the connection; `None` matches anything.
    pub peers: Option<Peers>,
    /// Destination ports (alternatives); `None` matches every protocol and port.
    pub ports: Option<Vec<PortMatch>>,
    /// Only packets of this IP family.
    pub ip_version: Option<IpFamily>,
    pub protocol: Option<Proto>,
    pub not_protocol: Option<Proto>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    /// The sending end: its address, and its (source) port.
    pub source: EntityMatch,
    /// The receiving end: its address, and its (destination) port.
    pub destination: EntityMatch,
}

impl CompiledRule {
    /// A rule matching every packet, to fill in.
    pub fn any(index: usize, action: Action) -> Self {
        CompiledRule {
            index,
            action,
            peers: None,
            ports: None,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityMatch::default(),
            destination: EntityMatch::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

/// ICMP (or ICMPv6, by `family`) type, and code when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpMatch {
    pub family: IpFamily,
    pub icmp_type: u8,
    pub code: Option<u8>,
}

impl IcmpMatch {
    pub fn matches(&self, icmp_type: u8, code: u8) -> bool {
        self.icmp_type == icmp_type && self.code.is_none_or(|c| c == code)
    }
}

/// One end of a connection (Calico's `EntityRule`): every part present must hold. The positive
/// parts are `None` when absent; the negated ones are absent when `None` or empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityMatch {
    /// The address belongs to one of these endpoints (`selector`, `namespaceSelector`).
    pub endpoints: Option<BTreeSet<EndpointKey>>,
    /// The address belongs to none of these (`notSelector`; kept when empty: pods may join).
    pub not_endpoints: Option<BTreeSet<EndpointKey>>,
    /// The address is in one of these (`nets`).
    pub nets: Option<Vec<IpNet>>,
    /// The address is in none of these (`notNets`).
    pub not_nets: Vec<IpNet>,
    /// This end's port is one of these (`ports`); named ports resolve on this end's endpoint.
    pub ports: Option<Vec<PortMatch>>,
    /// This end's port is none of these (`notPorts`).
    pub not_ports: Vec<PortMatch>,
}

impl EntityMatch {
    pub fn is_any(&self) -> bool {
        *self == EntityMatch::default()
    }
}

/// A union of endpoints and address blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub endpoints: BTreeSet<EndpointKey>,
    /// Some peer selects pods (else `endpoints` stays empty whatever pods come).
    pub by_selector: bool,
    pub blocks: Vec<IpBlock>,
}

/// `cidr` minus every `except`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port (or no port) of one protocol.
    Protocol(Proto),
    /// Ports `first..=last` (destination ports, or the ports of the end it is matched on).
    Range { proto: Proto, first: u16, last: u16 },
    /// A named container port, resolved on each endpoint that has it (and only those: an end
    /// without the name never matches). The destination's, or the end it is matched on.
    Named {
        proto: Proto,
        name: String,
        resolved: BTreeMap<EndpointKey, u16>,
    },
}
