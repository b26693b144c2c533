//! What policies are compiled against: the endpoints (pods) with their addresses, labels and
//! named ports, the namespaces with their labels, and the nodes' own addresses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub type Labels = BTreeMap<String, String>;

/// A pod, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub namespace: String,
    pub pod: String,
}

impl EndpointKey {
    pub fn new(namespace: impl Into<String>, pod: impl Into<String>) -> Self {
        EndpointKey {
            namespace: namespace.into(),
            pod: pod.into(),
        }
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// IP protocols policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    IcmpV6,
    /// Any other protocol by number.
    Number(u8),
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
            Proto::Icmp => 1,
            Proto::IcmpV6 => 58,
            Proto::Number(n) => n,
        }
    }

    /// Whether packets of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp | Proto::Sctp)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Sctp => f.write_str("sctp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::IcmpV6 => f.write_str("icmpv6"),
            Proto::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<trellis_datastore::resources::network_policy::Protocol> for Proto {
    fn from(p: trellis_datastore::resources::network_policy::Protocol) -> Self {
        use trellis_datastore::resources::network_policy::Protocol;
        match p {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
            Protocol::Sctp => Proto::Sctp,
        }
    }
}

impl Proto {
    /// By number, named where it has a name (so `6` and `TCP` compare equal).
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            1 => Proto::Icmp,
            58 => Proto::IcmpV6,
            n => Proto::Number(n),
        }
    }
}

impl From<trellis_datastore::resources::global_policy::IpProtocol> for Proto {
    fn from(p: trellis_datastore::resources::global_policy::IpProtocol) -> Self {
        Proto::from_number(p.number())
    }
}

/// A named container port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub key: EndpointKey,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    /// Host-side interface (the veth the pod's packets arrive on).
    pub iface: String,
    pub node: String,
    pub ports: Vec<NamedPort>,
}

impl Endpoint {
    /// The port `name` resolves to for `proto` on this endpoint, if it has one.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// Everything a policy is compiled against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
    /// Namespace name -> labels as selectors see them (including
    /// `kubernetes.io/metadata.name`, see `Namespace::effective_labels`).
    pub namespaces: BTreeMap<String, Labels>,
    /// Addresses of the nodes themselves, by node name.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

impl Model {
    pub fn add_endpoint(&mut self, e: Endpoint) {
        self.namespaces
            .entry(e.key.namespace.clone())
            .or_insert_with(|| namespace_labels(&e.key.namespace, &Labels::new()));
        self.endpoints.insert(e.key.clone(), e);
    }

    /// Sets a namespace's labels (the name label is added, as the apiserver does).
    pub fn set_namespace(&mut self, name: &str, labels: &Labels) {
        self.namespaces
            .insert(name.to_string(), namespace_labels(name, labels));
    }

    /// The labels of namespace `name` (only the name label when it has no object).
    pub fn namespace_labels(&self, name: &str) -> Labels {
        self.namespaces
            .get(name)
            .cloned()
            .unwrap_or_else(|| namespace_labels(name, &Labels::new()))
    }

    /// Whether namespace `name`'s labels satisfy `pred` (without copying them).
    pub fn namespace_matches(&self, name: &str, pred: impl FnOnce(&Labels) -> bool) -> bool {
        match self.namespaces.get(name) {
            Some(labels) => pred(labels),
            None => pred(&namespace_labels(name, &Labels::new())),
        }
    }

    /// The endpoint holding `ip`.
    pub fn endpoint_of(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.values().find(|e| e.ips.contains(&ip))
    }

    /// The node whose own address `ip` is.
    pub fn host_of(&self, ip: IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(_, ips)| ips.contains(&ip))
            .map(|(n, _)| n.as_str())
    }
}

fn namespace_labels(name: &str, labels: &Labels) -> Labels {
    let mut l = labels.clone();
    l.insert(
        trellis_datastore::resources::namespace::METADATA_NAME_LABEL.to_string(),
        name.to_string(),
    );
    l
}
