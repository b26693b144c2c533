//! The CNI success result (SPEC.md section 5, "ADD Success"), one model for every version.
//!
//! The model holds the union of what 0.4.0, 1.0.0 and 1.1.0 can say; [`CniResult::to_json`]
//! renders it in one version (see `render.rs`), dropping what that version cannot express, and
//! [`CniResult::parse`] reads a result of any of them (a `prevResult`, a delegated IPAM plugin's
//! output). Converting between versions is parse, then render in the other version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use super::error::{CniError, ErrorCode};
use super::json::{self, index, FieldError, Obj};
use super::version::{CniVersion, VersionError};

/// A success result: interfaces created, addresses assigned, routes, DNS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An interface created by the attachment (host side ones included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Hardware address, as the plugin wrote it.
    pub mac: Option<String>,
    /// 1.1.0 and later.
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    /// 1.1.0 and later.
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    pub pci_id: Option<String>,
}

impl Interface {
    pub fn new(name: impl Into<String>) -> Interface {
        Interface {
            name: name.into(),
            ..Interface::default()
        }
    }
}

/// An address assigned by the attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length (`10.1.0.5/16`: the host bits are the address).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`]; absent in IPAM plugins' results.
    pub interface: Option<usize>,
}

impl IpConfig {
    pub fn new(address: IpNet, interface: Option<usize>) -> IpConfig {
        IpConfig {
            address,
            gateway: None,
            interface,
        }
    }

    /// "4" or "6", the 0.4.0 `version` field.
    pub fn family(&self) -> &'static str {
        match self.address {
            IpNet::V4(_) => "4",
            IpNet::V6(_) => "6",
        }
    }
}

/// A route created by the attachment. Everything but `dst` and `gw` is 1.1.0 and later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    /// 0 global, 253 link, 254 host.
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// Whether a field only 1.1.0 can carry is set.
    pub fn has_extended_fields(&self) -> bool {
        self.mtu.is_some()
            || self.advmss.is_some()
            || self.priority.is_some()
            || self.table.is_some()
            || self.scope.is_some()
    }
}

/// DNS settings, in results and in the network configuration alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    pub(crate) fn from_obj(obj: &Obj<'_>) -> Result<Dns, FieldError> {
        Ok(Dns {
            nameservers: obj.str_list("nameservers")?,
            domain: obj.non_empty_str("domain")?.map(str::to_string),
            search: obj.str_list("search")?,
            options: obj.str_list("options")?,
        })
    }
}

/// A result that cannot be read. CNI error 6 (failed to decode), or 1 for a version whose result
/// format Trellis does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("result is not valid JSON: {0}")]
    Syntax(String),
    #[error("result {0}")]
    Field(#[from] FieldError),
    #[error("result: {0}")]
    Version(#[from] VersionError),
}

impl ResultError {
    pub const fn code(&self) -> ErrorCode {
        match self {
            ResultError::Version(_) => ErrorCode::IncompatibleVersion,
            ResultError::Syntax(_) | ResultError::Field(_) => ErrorCode::DecodingFailure,
        }
    }
}

impl From<ResultError> for CniError {
    fn from(e: ResultError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

/// Result versions whose format is the one read here: 0.3.0 and 0.3.1 are 0.4.0's format.
const READABLE_OLD_VERSIONS: [&str; 2] = ["0.3.0", "0.3.1"];

impl CniResult {
    /// Parses a result printed by a plugin (e.g. a delegated IPAM plugin's stdout).
    pub fn parse(text: &str) -> Result<CniResult, ResultError> {
        let value = json::parse_document(text).map_err(ResultError::Syntax)?;
        CniResult::from_value(&value, "")
    }

    /// Reads a result of any supported version from a JSON value found at `path` (`"prevResult"`
    /// inside a configuration, `""` for a whole document). Unknown keys are ignored; a 0.4.0
    /// `ips[].version` must agree with the address; `""` for an optional string means absent.
    pub fn from_value(value: &Value, path: &str) -> Result<CniResult, ResultError> {
        let obj = Obj::new(value, path)?;
        if let Some(v) = obj.str("cniVersion")? {
            if !READABLE_OLD_VERSIONS.contains(&v) {
                CniVersion::parse(v)?;
            }
        }
        let interfaces = each(&obj, "interfaces", parse_interface)?;
        let ips = each(&obj, "ips", parse_ip)?;
        let routes = each(&obj, "routes", parse_route)?;
        let dns = match obj.obj("dns")? {
            Some(d) => Dns::from_obj(&d)?,
            None => Dns::default(),
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }

    /// What survives rendering in `version`: the same result without the fields that version
    /// cannot carry. `parse(to_json(v)) == restricted_to(v)` for every result.
    pub fn restricted_to(&self, version: CniVersion) -> CniResult {
        let mut out = self.clone();
        if !version.has_extended_fields() {
            for i in &mut out.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for r in &mut out.routes {
                *r = Route::new(r.dst, r.gw);
            }
        }
        out
    }

    /// The index of the interface named `name`, if the result lists it.
    pub fn interface_index(&self, name: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == name)
    }
}

/// Applies `parse` to each element of the array `key` (absent is empty).
fn each<T>(
    obj: &Obj<'_>,
    key: &str,
    parse: impl Fn(&Obj<'_>) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    let Some(items) = obj.array(key)? else {
        return Ok(Vec::new());
    };
    let path = obj.at(key);
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(&Obj::new(item, index(&path, i))?))
        .collect()
}

fn parse_interface(obj: &Obj<'_>) -> Result<Interface, FieldError> {
    let owned = |s: Option<&str>| s.map(str::to_string);
    Ok(Interface {
        name: obj.required_str("name")?.to_string(),
        mac: owned(obj.non_empty_str("mac")?),
        mtu: obj.u32("mtu")?,
        sandbox: owned(obj.non_empty_str("sandbox")?),
        socket_path: owned(obj.non_empty_str("socketPath")?),
        pci_id: owned(obj.non_empty_str("pciID")?),
    })
}

pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address with a prefix length (CIDR)"))
}

pub(crate) fn parse_ip_addr(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

fn parse_ip(obj: &Obj<'_>) -> Result<IpConfig, FieldError> {
    let address = obj
        .parsed("address", parse_cidr)?
        .ok_or_else(|| obj.missing("address"))?;
    let config = IpConfig {
        address,
        gateway: obj.parsed("gateway", parse_ip_addr)?,
        interface: obj.uint("interface", u32::MAX.into())?.map(|i| i as usize),
    };
    // 0.3.x/0.4.0 carry the family redundantly; a disagreement means a corrupt result.
    if let Some(family) = obj.non_empty_str("version")? {
        if family != config.family() {
            return Err(FieldError::invalid(
                obj.at("version"),
                format!(
                    "{family:?} does not match address {} (IPv{})",
                    config.address,
                    config.family()
                ),
            ));
        }
    }
    Ok(config)
}

fn parse_route(obj: &Obj<'_>) -> Result<Route, FieldError> {
    let dst = obj
        .parsed("dst", parse_cidr)?
        .ok_or_else(|| obj.missing("dst"))?;
    Ok(Route {
        dst,
        gw: obj.parsed("gw", parse_ip_addr)?,
        mtu: obj.u32("mtu")?,
        advmss: obj.u32("advmss")?,
        priority: obj.u32("priority")?,
        table: obj.u32("table")?,
        scope: obj.uint("scope", u8::MAX.into())?.map(|s| s as u8),
    })
}

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
