//! `runtimeConfig`: the capability arguments the runtime inserts (SPEC.md section 3, "Deriving
//! runtimeConfig"; the keys are CONVENTIONS.md's). Trellis reads `portMappings`, `ips`, `mac` and
//! `bandwidth`; every other capability is kept in [`RuntimeConfig::extra`].
//!
//! containerd's CRI plugin (go-cni) marshals its `PortMapping` and `BandWidth` structs without
//! JSON tags, so their keys arrive PascalCase (`HostPort`, `IngressRate`) where CONVENTIONS.md
//! writes camelCase (`hostPort`, `ingressRate`). Both spellings are accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::Value;

use super::args::RequestedIp;
use super::json::{index, uint_value, wrong_type, FieldError, Obj};

/// The capability arguments of one invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `portMappings`: host ports to forward to the pod.
    pub port_mappings: Vec<PortMapping>,
    /// `ips`: addresses the runtime asks for.
    pub ips: Vec<RequestedIp>,
    /// `mac`: the MAC address for the container interface.
    pub mac: Option<MacAddr>,
    /// `bandwidth`: traffic shaping limits.
    pub bandwidth: Option<Bandwidth>,
    /// Every other capability, as given.
    pub extra: BTreeMap<String, Value>,
}

/// One `portMappings` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// Default TCP (Kubernetes' default).
    pub protocol: Protocol,
    /// Bind only this host address; `None` (absent or `""`) means all.
    pub host_ip: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// Any case: Kubernetes writes `TCP`, CRI lowercases it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!("{s:?} is not tcp, udp or sctp")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `bandwidth` limits: rates in bits per second, bursts in bits; 0 (or absent) means no limit,
/// as the reference `bandwidth` plugin reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;

    /// Six hex octets separated by ':' or '-' (`c2:11:22:33:44:55`), unicast and not all zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a MAC address like c2:11:22:33:44:55");
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        // The kernel refuses these for an interface (eth_validate_addr).
        if out[0] & 1 == 1 {
            return Err(format!("{s:?} is a multicast address"));
        }
        if out == [0; 6] {
            return Err(format!("{s:?} is the all-zero address"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl RuntimeConfig {
    /// Reads the `runtimeConfig` object found at `obj.path`.
    pub(crate) fn from_obj(obj: &Obj<'_>) -> Result<RuntimeConfig, FieldError> {
        let mut rc = RuntimeConfig::default();
        if let Some(items) = obj.array("portMappings")? {
            let path = obj.at("portMappings");
            for (i, item) in items.iter().enumerate() {
                rc.port_mappings
                    .push(port_mapping(&Obj::new(item, index(&path, i))?)?);
            }
        }
        let ips_path = obj.at("ips");
        rc.ips = obj
            .str_list("ips")?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse()
                    .map_err(|r| FieldError::invalid(index(&ips_path, i), r))
            })
            .collect::<Result<_, _>>()?;
        rc.mac = obj.parsed("mac", |s| s.parse())?;
        if let Some(bw) = obj.obj("bandwidth")? {
            rc.bandwidth = Some(bandwidth(&bw)?);
        }
        const KNOWN: [&str; 4] = ["portMappings", "ips", "mac", "bandwidth"];
        rc.extra = obj
            .map
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(rc)
    }
}

/// The value of `camel` or `pascal` (whichever is present, not null) with its path. Both present
/// with different values is an error: there is no telling which one the runtime meant.
fn either<'a>(
    obj: &Obj<'a>,
    camel: &str,
    pascal: &str,
) -> Result<Option<(&'a Value, String)>, FieldError> {
    match (obj.get(camel), obj.get(pascal)) {
        (Some(a), Some(b)) if a != b => Err(FieldError::invalid(
            obj.path.clone(),
            format!("both {camel} ({a}) and {pascal} ({b}) are given"),
        )),
        (Some(a), _) => Ok(Some((a, obj.at(camel)))),
        (None, Some(b)) => Ok(Some((b, obj.at(pascal)))),
        (None, None) => Ok(None),
    }
}

fn port(obj: &Obj<'_>, camel: &str, pascal: &str) -> Result<u16, FieldError> {
    let (v, path) = either(obj, camel, pascal)?.ok_or_else(|| obj.missing(camel))?;
    match uint_value(v, &path, u16::MAX.into())? {
        0 => Err(FieldError::invalid(path, "port 0 is not a port")),
        n => Ok(n as u16),
    }
}

fn string<'a>(
    obj: &Obj<'a>,
    camel: &str,
    pascal: &str,
) -> Result<Option<(&'a str, String)>, FieldError> {
    match either(obj, camel, pascal)? {
        None => Ok(None),
        Some((Value::String(s), _)) if s.is_empty() => Ok(None),
        Some((Value::String(s), path)) => Ok(Some((s, path))),
        Some((other, path)) => Err(wrong_type(&path, "a string", other)),
    }
}

fn port_mapping(obj: &Obj<'_>) -> Result<PortMapping, FieldError> {
    let protocol = match string(obj, "protocol", "Protocol")? {
        None => Protocol::Tcp,
        Some((s, path)) => s.parse().map_err(|r| FieldError::invalid(path, r))?,
    };
    let host_ip = match string(obj, "hostIP", "HostIP")? {
        None => None,
        Some((s, path)) => Some(
            s.parse()
                .map_err(|_| FieldError::invalid(path, format!("{s:?} is not an IP address")))?,
        ),
    };
    Ok(PortMapping {
        host_port: port(obj, "hostPort", "HostPort")?,
        container_port: port(obj, "containerPort", "ContainerPort")?,
        protocol,
        host_ip,
    })
}

fn bandwidth(obj: &Obj<'_>) -> Result<Bandwidth, FieldError> {
    let rate = |camel: &str, pascal: &str| -> Result<u64, FieldError> {
        match either(obj, camel, pascal)? {
            None => Ok(0),
            Some((v, path)) => uint_value(v, &path, u64::MAX),
        }
    };
    Ok(Bandwidth {
        ingress_rate: rate("ingressRate", "IngressRate")?,
        ingress_burst: rate("ingressBurst", "IngressBurst")?,
        egress_rate: rate("egressRate", "EgressRate")?,
        egress_burst: rate("egressBurst", "EgressBurst")?,
    })
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
