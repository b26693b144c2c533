//! The `ipam` section of the network configuration. `"type": "trellis-ipam"` is Trellis' own
//! block IPAM (served by the node agent) and is read here; any other type names a delegated IPAM
//! plugin (host-local, dhcp, ...) found through `CNI_PATH`, whose section is kept as given for it
//! to read (SPEC.md section 4: the delegate receives the complete configuration).

use std::fmt;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::json::{index, wrong_type, FieldError, Obj};

/// The IPAM type that means Trellis' own IPAM.
pub const TRELLIS_IPAM: &str = "trellis-ipam";

/// Who assigns the addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipam {
    Trellis(TrellisIpam),
    Delegated(DelegatedIpam),
}

impl Ipam {
    /// The `type` field: the IPAM plugin's binary name.
    pub fn plugin_type(&self) -> &str {
        match self {
            Ipam::Trellis(_) => TRELLIS_IPAM,
            Ipam::Delegated(d) => &d.plugin_type,
        }
    }

    /// The section exactly as configured.
    pub fn raw(&self) -> &Map<String, Value> {
        match self {
            Ipam::Trellis(t) => &t.raw,
            Ipam::Delegated(d) => &d.raw,
        }
    }
}

/// A delegated IPAM plugin and its section, untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegatedIpam {
    pub plugin_type: String,
    pub raw: Map<String, Value>,
}

/// Trellis IPAM settings (Calico's `calico-ipam` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrellisIpam {
    /// Pools to take IPv4 addresses from, by CIDR or name; empty means any enabled pool.
    pub ipv4_pools: Vec<PoolRef>,
    /// Pools to take IPv6 addresses from, by CIDR or name; empty means any enabled pool.
    pub ipv6_pools: Vec<PoolRef>,
    /// Default true.
    pub assign_ipv4: bool,
    /// Default false.
    pub assign_ipv6: bool,
    /// The section as configured (unknown keys included).
    pub raw: Map<String, Value>,
}

/// An IP pool named in `ipv4_pools`/`ipv6_pools`: by CIDR (it contains a `/`) or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolRef {
    Cidr(IpNet),
    Name(String),
}

impl fmt::Display for PoolRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolRef::Cidr(c) => write!(f, "{c}"),
            PoolRef::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Ipam {
    /// Reads the `ipam` object found at `obj.path`.
    pub(crate) fn from_obj(obj: &Obj<'_>) -> Result<Ipam, FieldError> {
        let plugin_type = obj.required_str("type")?;
        if plugin_type.contains(['/', '\\']) {
            return Err(FieldError::invalid(
                obj.at("type"),
                format!("{plugin_type:?} must be a binary name, without '/' or '\\'"),
            ));
        }
        if plugin_type != TRELLIS_IPAM {
            return Ok(Ipam::Delegated(DelegatedIpam {
                plugin_type: plugin_type.to_string(),
                raw: obj.map.clone(),
            }));
        }
        let ipam = TrellisIpam {
            ipv4_pools: pools(obj, "ipv4_pools", Family::V4)?,
            ipv6_pools: pools(obj, "ipv6_pools", Family::V6)?,
            assign_ipv4: flag(obj, "assign_ipv4")?.unwrap_or(true),
            assign_ipv6: flag(obj, "assign_ipv6")?.unwrap_or(false),
            raw: obj.map.clone(),
        };
        if !ipam.assign_ipv4 && !ipam.assign_ipv6 {
            return Err(FieldError::invalid(
                obj.path.clone(),
                "assign_ipv4 and assign_ipv6 are both false: the pod would get no address",
            ));
        }
        Ok(Ipam::Trellis(ipam))
    }
}

/// A boolean, also accepted as the strings "true"/"false" (Calico's examples quote them).
fn flag(obj: &Obj<'_>, key: &str) -> Result<Option<bool>, FieldError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(FieldError::invalid(
                obj.at(key),
                format!("{s:?} is not true or false"),
            )),
        },
        Some(other) => Err(wrong_type(&obj.at(key), "a boolean", other)),
    }
}

fn pools(obj: &Obj<'_>, key: &str, family: Family) -> Result<Vec<PoolRef>, FieldError> {
    let path = obj.at(key);
    obj.str_list(key)?
        .into_iter()
        .enumerate()
        .map(|(i, s)| pool_ref(&s, family).map_err(|r| FieldError::invalid(index(&path, i), r)))
        .collect()
}

fn pool_ref(s: &str, family: Family) -> Result<PoolRef, String> {
    if !s.contains('/') {
        return if is_resource_name(s) {
            Ok(PoolRef::Name(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is neither a CIDR nor a pool name (lower case letters, digits, '-', '.')"
            ))
        };
    }
    let net: IpNet = s.parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
    match (family, net) {
        (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)) => {}
        (Family::V4, IpNet::V6(_)) => return Err(format!("{s:?} is an IPv6 CIDR")),
        (Family::V6, IpNet::V4(_)) => return Err(format!("{s:?} is an IPv4 CIDR")),
    }
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set (the pool is {})",
            net.trunc()
        ));
    }
    Ok(PoolRef::Cidr(net))
}

/// An RFC 1123 subdomain, as Kubernetes and the datastore name IP pools.
fn is_resource_name(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(ok_char)
        && edge(s.chars().next())
        && edge(s.chars().last())
}
