//! Node address and MTU autodetection with Calico's `IP_AUTODETECTION_METHOD` semantics.
//!
//! ```text
//!  "can-reach=8.8.8.8" --FromStr--> Method --+
//!                                            v
//!  kernel --netlink::Netlink--> [InterfaceInfo] + RouteLookup --select::select--> Detected
//!                                                                                   | .mtu
//!                                                      mtu::pod_mtu(underlay, encap) <+
//! ```
//! - [`method`]: parsing the method strings;
//! - [`select`]: the choice itself, pure;
//! - [`netlink`]: the kernel snapshot and route lookup, in the current network namespace;
//! - [`mtu`]: pod MTU from the underlay MTU and the encapsulation, pure.

pub mod method;
pub mod mtu;
pub mod netlink;
pub mod select;

use std::net::IpAddr;

pub use method::{Destination, InterfacePatterns, Method, MethodError, DEFAULT_EXCLUDES};
pub use mtu::{pod_mtu, pod_mtu_for, Encapsulation, MtuError, MtuOverrides};
pub use netlink::{Netlink, NetlinkError};
pub use select::{select, Detected, Family, InterfaceInfo, RouteLookup, SelectError};

#[derive(Debug, thiserror::Error)]
pub enum AutodetectError {
    #[error("IP autodetection method {method} ({family}): {source}")]
    Netlink {
        method: String,
        family: Family,
        #[source]
        source: NetlinkError,
    },
    #[error("IP autodetection method {method}: cannot resolve {host}: {source}")]
    Resolve {
        method: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "IP autodetection method {method}: {host} has no {family} address (resolved to: {})",
        if resolved.is_empty() { "nothing".to_owned() } else {
            resolved.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    )]
    NoAddressOfFamily {
        method: String,
        host: String,
        family: Family,
        resolved: Vec<IpAddr>,
    },
    #[error(transparent)]
    Select(#[from] SelectError),
}

/// Detects the node's `family` address by `method` in the current network namespace.
pub async fn detect(method: &Method, family: Family) -> Result<Detected, AutodetectError> {
    let netlink_err = |source| AutodetectError::Netlink {
        method: method.to_string(),
        family,
        source,
    };
    // The destination first: a wrong-family literal needs no socket.
    let destination = match method {
        Method::CanReach(dest) => Some(resolve(method, dest, family).await?),
        _ => None,
    };
    let nl = Netlink::open().map_err(netlink_err)?;
    let interfaces = nl.interfaces().await.map_err(netlink_err)?;
    let route = match destination {
        Some(dest) => Some(nl.route_to(dest).await.map_err(netlink_err)?),
        None => None,
    };
    let detected = select(method, family, &interfaces, route.as_ref())?;
    tracing::info!(
        %method,
        %family,
        address = %detected.address,
        interface = %detected.interface,
        mtu = detected.mtu,
        "autodetected the node address"
    );
    Ok(detected)
}

/// The `can-reach=` destination as an address of `family`; host names are resolved the way
/// Calico's UDP dial does (the system resolver), taking the first address of the family.
async fn resolve(
    method: &Method,
    dest: &Destination,
    family: Family,
) -> Result<IpAddr, AutodetectError> {
    match dest {
        Destination::Ip(ip) if family.contains(*ip) => Ok(*ip),
        Destination::Ip(ip) => Err(SelectError::WrongFamily {
            method: method.to_string(),
            family,
            address: *ip,
        }
        .into()),
        Destination::Host(host) => {
            let resolved: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), 80))
                .await
                .map_err(|source| AutodetectError::Resolve {
                    method: method.to_string(),
                    host: host.clone(),
                    source,
                })?
                .map(|sa| sa.ip())
                .collect();
            resolved
                .iter()
                .copied()
                .find(|ip| family.contains(*ip))
                .ok_or_else(|| AutodetectError::NoAddressOfFamily {
                    method: method.to_string(),
                    host: host.clone(),
                    family,
                    resolved,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_literal_of_the_wrong_family_fails_before_any_socket() {
        let m: Method = "can-reach=2001:db8::1".parse().unwrap();
        let e = detect(&m, Family::V4).await.unwrap_err().to_string();
        assert!(
            e.contains("can-reach=2001:db8::1") && e.contains("not an IPv4 address"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_of_the_family() {
        let m: Method = "can-reach=localhost".parse().unwrap();
        let Method::CanReach(dest) = &m else {
            unreachable!()
        };
        let ip = resolve(&m, dest, Family::V4).await.unwrap();
        assert!(ip.is_loopback() && ip.is_ipv4(), "{ip}");
    }
}
