//! The policy compiler, pure: no I/O.
//!
//! ```text
//!  NetworkPolicy / GlobalNetworkPolicy + Model (endpoints, namespaces, hosts)
//!        --compile--> [CompiledPolicy] (the IR: who is selected, which peers, which ports)
//!        --trace----> Verdict for one packet, naming the policy and rule that decided it
//!        --render---> one nftables transaction (later: the agent applies it)
//! ```
//!
//! Both the dataplane and `trellisctl policy trace` come from the same IR, so what trace says
//! is what the kernel does.
//!
//! Semantics (Calico's, which include Kubernetes' exactly): policies that apply to an endpoint
//! in a direction are evaluated in `order` (Kubernetes NetworkPolicies have order 1000, as in
//! Calico), then by name; the first rule that matches decides (Allow, Deny; Pass ends the
//! evaluation and lets the namespace default, allow, decide; Log only records). If at least one
//! policy applies and no rule matched, the packet is denied. If none applies, it is allowed.
//! A rule matches when everything it names holds: for NetworkPolicies the peer and destination
//! port, for GlobalNetworkPolicies also IP family, protocol and its negation, ICMP type/code,
//! and source and destination entities (endpoints by selector, CIDRs, ports, each negatable).
//! Ingress and egress are independent. Replies of allowed connections pass (conntrack), and
//! traffic from a node to its own pods is always allowed.

pub mod compile;
pub mod engine;
pub mod ir;
pub mod model;
pub mod render;
pub mod resources;
pub mod trace;

pub use compile::{compile_global_policy, compile_network_policy, CompileError};
pub use engine::{Engine, Source, Transaction};
pub use ir::{
    Action, CompiledPolicy, CompiledRule, Direction, EntityMatch, IcmpMatch, IpFamily, Peers,
    PolicyId, PortMatch,
};
pub use model::{Endpoint, EndpointKey, Model, NamedPort, Proto};
pub use trace::{trace, trace_detailed, Decision, Packet, PacketDetail, Trace};
