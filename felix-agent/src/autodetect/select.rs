//! Choosing the node address from a snapshot of the host's interfaces: pure, no I/O.
//!
//! Calico semantics (`node/pkg/lifecycle/startup/autodetection/`):
//! - interfaces are examined from the highest ifindex down (Calico walks `net.Interfaces()` in
//!   reverse, calicoctl PR #1546), addresses in the kernel's order;
//! - an address is usable when Go's `IsGlobalUnicast` holds: not unspecified, loopback,
//!   link-local, multicast or the IPv4 broadcast address;
//! - `first-found` and `skip-interface=` skip [`DEFAULT_EXCLUDES`]; `interface=` and `cidr=` do
//!   not;
//! - the result keeps the interface's prefix length (`10.0.0.5/24`), as `node.spec.bgp.ipv4Address`.
//!
//! Beyond Calico: interfaces that are administratively down are skipped by every enumerating
//! method, and `first-found` / `skip-interface=` also skip any interface flagged loopback.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::method::{InterfacePatterns, Method};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    pub fn contains(self, ip: IpAddr) -> bool {
        Self::of(ip) == self
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    /// IFF_UP: administratively up.
    pub up: bool,
    /// IFF_LOOPBACK.
    pub loopback: bool,
    pub mtu: u32,
    /// Addresses of both families with their prefix lengths, in the kernel's order.
    pub addresses: Vec<IpNet>,
}

/// The kernel's answer to "how would you reach `destination`" (RTM_GETROUTE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLookup {
    pub destination: IpAddr,
    /// RTA_PREFSRC: the source address the kernel would pick.
    pub source: Option<IpAddr>,
    /// RTA_OIF: the output interface's index.
    pub output_interface: Option<u32>,
}

/// The chosen node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The address with the prefix length of its interface's subnet.
    pub address: IpNet,
    pub interface: String,
    /// The MTU of that interface: the underlay MTU for [`super::mtu`].
    pub mtu: u32,
}

/// What one interface looked like to a method that found nothing, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered {
    pub interface: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Down,
    Loopback,
    ExcludedBy(String),
    NameNotMatched,
    /// No usable address of the family; `skipped` lists the unusable ones seen.
    NoUsableAddress {
        family: Family,
        skipped: Vec<IpNet>,
    },
    /// Usable addresses, none in the `cidr=` list.
    OutsideCidrs(Vec<IpNet>),
}

impl fmt::Display for Considered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.interface)?;
        match &self.verdict {
            Verdict::Down => f.write_str("down")?,
            Verdict::Loopback => f.write_str("loopback")?,
            Verdict::ExcludedBy(p) => write!(f, "excluded by {p}")?,
            Verdict::NameNotMatched => f.write_str("name not matched")?,
            Verdict::NoUsableAddress { family, skipped } => {
                write!(f, "no usable {family} address")?;
                if !skipped.is_empty() {
                    write!(f, "; skipped {}", join(skipped))?;
                }
            }
            Verdict::OutsideCidrs(addrs) => write!(f, "{} outside the CIDRs", join(addrs))?,
        }
        f.write_str(")")
    }
}

/// Why no address was chosen; each names the method and what it looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "IP autodetection method {method} found no {family} address; interfaces looked at: {}",
        list_or_none(considered)
    )]
    NothingFound {
        method: String,
        family: Family,
        considered: Vec<Considered>,
    },
    #[error("IP autodetection method {method}: {address} is not an {family} address")]
    WrongFamily {
        method: String,
        family: Family,
        address: IpAddr,
    },
    #[error(
        "IP autodetection method {method}: {address} is on no interface, so its subnet and the \
         underlay MTU are unknown; interfaces looked at: {}",
        list_or_none(interfaces)
    )]
    AddressNotLocal {
        method: String,
        address: IpAddr,
        interfaces: Vec<String>,
    },
    #[error(
        "IP autodetection method {method}: the kernel chose no source address to reach \
         {destination}"
    )]
    NoSourceAddress { method: String, destination: IpAddr },
    #[error(
        "IP autodetection method {method}: the kernel would reach {destination} from {source_address}, \
         which is on no interface; interfaces looked at: {}",
        list_or_none(interfaces)
    )]
    SourceNotLocal {
        method: String,
        destination: IpAddr,
        source_address: IpAddr,
        interfaces: Vec<String>,
    },
    #[error("IP autodetection method {method}: /{prefix_len} is too long for the address")]
    BadPrefix { method: String, prefix_len: u8 },
    #[error("IP autodetection method {method} needs a route lookup, and none was given")]
    MissingRouteLookup { method: String },
}

/// True for the addresses Go's `IP.IsGlobalUnicast` accepts (private ranges included).
pub fn is_usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Chooses the node's `family` address from `interfaces` by `method`. `route` is the kernel's
/// lookup of the `can-reach=` destination and is read only by that method.
pub fn select(
    method: &Method,
    family: Family,
    interfaces: &[InterfaceInfo],
    route: Option<&RouteLookup>,
) -> Result<Detected, SelectError> {
    match method {
        Method::FirstFound => enumerate(method, family, interfaces, &Filter::default_excludes()),
        Method::SkipInterface(skip) => enumerate(
            method,
            family,
            interfaces,
            &Filter {
                skip: Some(skip),
                ..Filter::default_excludes()
            },
        ),
        Method::Interface(include) => enumerate(
            method,
            family,
            interfaces,
            &Filter {
                include: Some(include),
                ..Filter::default()
            },
        ),
        Method::Cidr(cidrs) => enumerate(
            method,
            family,
            interfaces,
            &Filter {
                cidrs,
                ..Filter::default()
            },
        ),
        Method::CanReach(_) => {
            let route = route.ok_or_else(|| SelectError::MissingRouteLookup {
                method: method.to_string(),
            })?;
            by_route(method, family, interfaces, route)
        }
        Method::Explicit {
            address,
            prefix_len,
        } => explicit(method, family, interfaces, *address, *prefix_len),
    }
}

#[derive(Default)]
struct Filter<'a> {
    default_excludes: Option<InterfacePatterns>,
    skip_loopback: bool,
    skip: Option<&'a InterfacePatterns>,
    include: Option<&'a InterfacePatterns>,
    cidrs: &'a [IpNet],
}

impl Filter<'_> {
    fn default_excludes() -> Self {
        Self {
            default_excludes: Some(InterfacePatterns::default_excludes()),
            skip_loopback: true,
            ..Self::default()
        }
    }

    /// Why `iface` is not a candidate at all, if it is not.
    fn reject(&self, iface: &InterfaceInfo) -> Option<Verdict> {
        if let Some(include) = self.include {
            if !include.is_match(&iface.name) {
                return Some(Verdict::NameNotMatched);
            }
        }
        for excludes in [self.default_excludes.as_ref(), self.skip]
            .into_iter()
            .flatten()
        {
            if let Some(p) = excludes.first_match(&iface.name) {
                return Some(Verdict::ExcludedBy(p.to_owned()));
            }
        }
        if self.skip_loopback && iface.loopback {
            return Some(Verdict::Loopback);
        }
        if !iface.up {
            return Some(Verdict::Down);
        }
        None
    }

    fn in_cidrs(&self, ip: IpAddr) -> bool {
        self.cidrs.is_empty() || self.cidrs.iter().any(|c| c.contains(&ip))
    }
}

/// Calico's `FilteredEnumeration`: the first usable address, in the filter's CIDRs if any, of
/// the first candidate interface.
fn enumerate(
    method: &Method,
    family: Family,
    interfaces: &[InterfaceInfo],
    filter: &Filter<'_>,
) -> Result<Detected, SelectError> {
    let mut considered = Vec::new();
    for iface in calico_order(interfaces) {
        if let Some(verdict) = filter.reject(iface) {
            considered.push(Considered {
                interface: iface.name.clone(),
                verdict,
            });
            continue;
        }
        let of_family = iface.addresses.iter().filter(|a| family.contains(a.addr()));
        let (usable, skipped): (Vec<IpNet>, Vec<IpNet>) =
            of_family.partition(|a| is_usable(a.addr()));
        if let Some(found) = usable.iter().find(|a| filter.in_cidrs(a.addr())) {
            return Ok(detected(iface, *found));
        }
        let verdict = if usable.is_empty() {
            Verdict::NoUsableAddress { family, skipped }
        } else {
            Verdict::OutsideCidrs(usable)
        };
        considered.push(Considered {
            interface: iface.name.clone(),
            verdict,
        });
    }
    Err(SelectError::NothingFound {
        method: method.to_string(),
        family,
        considered,
    })
}

/// Calico's `ReachDestination`: the interface address equal to the source the kernel picked,
/// on the output interface when it holds it, else on whichever interface does.
fn by_route(
    method: &Method,
    family: Family,
    interfaces: &[InterfaceInfo],
    route: &RouteLookup,
) -> Result<Detected, SelectError> {
    if !family.contains(route.destination) {
        return Err(SelectError::WrongFamily {
            method: method.to_string(),
            family,
            address: route.destination,
        });
    }
    let source = route.source.ok_or_else(|| SelectError::NoSourceAddress {
        method: method.to_string(),
        destination: route.destination,
    })?;
    let output = route
        .output_interface
        .and_then(|oif| interfaces.iter().find(|i| i.index == oif));
    output
        .into_iter()
        .chain(calico_order(interfaces))
        .find_map(|iface| holding(iface, source))
        .ok_or_else(|| SelectError::SourceNotLocal {
            method: method.to_string(),
            destination: route.destination,
            source_address: source,
            interfaces: names(interfaces),
        })
}

/// A configured address: found on whichever interface holds it (up or not, excluded or not).
fn explicit(
    method: &Method,
    family: Family,
    interfaces: &[InterfaceInfo],
    address: IpAddr,
    prefix_len: Option<u8>,
) -> Result<Detected, SelectError> {
    if !family.contains(address) {
        return Err(SelectError::WrongFamily {
            method: method.to_string(),
            family,
            address,
        });
    }
    let mut found = calico_order(interfaces)
        .find_map(|iface| holding(iface, address))
        .ok_or_else(|| SelectError::AddressNotLocal {
            method: method.to_string(),
            address,
            interfaces: names(interfaces),
        })?;
    // A configured prefix wins over the interface's, as Calico keeps an `IP=a.b.c.d/n` as given.
    if let Some(len) = prefix_len {
        found.address = IpNet::new(address, len).map_err(|_| SelectError::BadPrefix {
            method: method.to_string(),
            prefix_len: len,
        })?;
    }
    Ok(found)
}

/// Highest ifindex first, as Calico walks the interfaces.
fn calico_order(interfaces: &[InterfaceInfo]) -> impl Iterator<Item = &InterfaceInfo> {
    let mut ordered: Vec<&InterfaceInfo> = interfaces.iter().collect();
    ordered.sort_by_key(|i| std::cmp::Reverse(i.index));
    ordered.into_iter()
}

fn holding(iface: &InterfaceInfo, ip: IpAddr) -> Option<Detected> {
    iface
        .addresses
        .iter()
        .find(|a| a.addr() == ip)
        .map(|a| detected(iface, *a))
}

fn detected(iface: &InterfaceInfo, address: IpNet) -> Detected {
    Detected {
        address,
        interface: iface.name.clone(),
        mtu: iface.mtu,
    }
}

fn names(interfaces: &[InterfaceInfo]) -> Vec<String> {
    calico_order(interfaces).map(|i| i.name.clone()).collect()
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_none<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        join(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str, mtu: u32, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index,
            up: true,
            loopback: name == "lo",
            mtu,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// lo, eth0 and eth1 (two NICs), a docker bridge, a pod veth, our vxlan device and a
    /// down NIC; indexes in creation order.
    fn host() -> Vec<InterfaceInfo> {
        let mut down = iface(7, "eth2", 1500, &["10.3.0.5/24"]);
        down.up = false;
        vec![
            iface(1, "lo", 65536, &["127.0.0.1/8", "::1/128"]),
            iface(
                2,
                "eth0",
                1500,
                &["10.1.0.5/24", "fe80::1/64", "2001:db8:1::5/64"],
            ),
            iface(
                3,
                "eth1",
                9000,
                &["169.254.9.9/16", "10.2.0.5/16", "fe80::2/64"],
            ),
            iface(4, "docker0", 1500, &["172.17.0.1/16"]),
            iface(
                5,
                "trellis0123456789a",
                1500,
                &["fe80::ecee:eeff:feee:eeee/64"],
            ),
            iface(6, "vxlan.trellis", 1450, &["192.168.77.0/32"]),
            down,
        ]
    }

    fn pick(
        method: &str,
        family: Family,
        ifaces: &[InterfaceInfo],
    ) -> Result<Detected, SelectError> {
        select(&method.parse().unwrap(), family, ifaces, None)
    }

    fn found(method: &str, family: Family) -> (String, String, u32) {
        let d = pick(method, family, &host()).unwrap_or_else(|e| panic!("{method}: {e}"));
        (d.address.to_string(), d.interface, d.mtu)
    }

    fn t(addr: &str, iface: &str, mtu: u32) -> (String, String, u32) {
        (addr.into(), iface.into(), mtu)
    }

    #[test]
    fn first_found_walks_from_the_highest_index_and_skips_exclusions() {
        // eth2 is down, vxlan.trellis / trellis* / docker0 are excluded, eth1's first address
        // is link-local: 10.2.0.5/16 on eth1 (Calico's reverse order picks eth1 over eth0).
        assert_eq!(
            found("first-found", Family::V4),
            t("10.2.0.5/16", "eth1", 9000)
        );
        // eth1 has only a link-local IPv6 address.
        assert_eq!(
            found("first-found", Family::V6),
            t("2001:db8:1::5/64", "eth0", 1500)
        );
    }

    #[test]
    fn interface_regexes_include_without_default_exclusions() {
        assert_eq!(
            found("interface=eth0", Family::V4),
            t("10.1.0.5/24", "eth0", 1500)
        );
        assert_eq!(
            found("interface=nomatch,eth0", Family::V4),
            t("10.1.0.5/24", "eth0", 1500)
        );
        assert_eq!(
            found("interface=docker.*", Family::V4),
            t("172.17.0.1/16", "docker0", 1500)
        );
        // Down interfaces are skipped even when named.
        let e = pick("interface=eth2", Family::V4, &host())
            .unwrap_err()
            .to_string();
        assert!(e.contains("eth2 (down)"), "{e}");
    }

    #[test]
    fn skip_interface_adds_to_the_default_exclusions() {
        assert_eq!(
            found("skip-interface=eth1", Family::V4),
            t("10.1.0.5/24", "eth0", 1500)
        );
        let e = pick("skip-interface=eth.*", Family::V4, &host()).unwrap_err();
        let SelectError::NothingFound { considered, .. } = &e else {
            panic!("{e}")
        };
        assert!(considered.contains(&Considered {
            interface: "docker0".into(),
            verdict: Verdict::ExcludedBy("^docker.*".into())
        }));
        assert!(considered.contains(&Considered {
            interface: "eth0".into(),
            verdict: Verdict::ExcludedBy("eth.*".into())
        }));
    }

    #[test]
    fn cidr_filters_addresses() {
        assert_eq!(
            found("cidr=10.1.0.0/16", Family::V4),
            t("10.1.0.5/24", "eth0", 1500)
        );
        assert_eq!(
            found("cidr=192.0.2.0/24,10.2.0.0/16", Family::V4),
            t("10.2.0.5/16", "eth1", 9000)
        );
        assert_eq!(
            found("cidr=2001:db8::/32", Family::V6),
            t("2001:db8:1::5/64", "eth0", 1500)
        );
        // No default exclusions for cidr=, as in Calico.
        assert_eq!(
            found("cidr=172.16.0.0/12", Family::V4),
            t("172.17.0.1/16", "docker0", 1500)
        );
        let e = pick("cidr=192.0.2.0/24", Family::V4, &host())
            .unwrap_err()
            .to_string();
        assert!(e.contains("eth0 (10.1.0.5/24 outside the CIDRs)"), "{e}");
    }

    #[test]
    fn nothing_found_names_the_method_and_every_interface() {
        let e = pick("interface=wlan0", Family::V4, &host())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("IP autodetection method interface=wlan0 found no IPv4 address"),
            "{e}"
        );
        for name in ["lo", "eth0", "eth1", "docker0", "vxlan.trellis", "eth2"] {
            assert!(e.contains(&format!("{name} (")), "{name} missing from {e}");
        }
        let only_lo = vec![iface(1, "lo", 65536, &["127.0.0.1/8"])];
        let e = pick("first-found", Family::V4, &only_lo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lo (excluded by ^lo)"), "{e}");
        let e = pick("interface=lo", Family::V4, &only_lo)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lo (no usable IPv4 address; skipped 127.0.0.1/8)"),
            "{e}"
        );
        let e = pick("first-found", Family::V6, &[])
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("interfaces looked at: none"), "{e}");
    }

    #[test]
    fn loopback_flag_is_skipped_by_first_found_whatever_the_name() {
        let mut ifaces = vec![iface(1, "eth0", 1500, &["10.1.0.5/24"])];
        let mut odd = iface(2, "myloop", 65536, &["10.9.9.9/32"]);
        odd.loopback = true;
        ifaces.push(odd);
        assert_eq!(
            pick("first-found", Family::V4, &ifaces).unwrap().interface,
            "eth0"
        );
        // A routable address on lo is a real setup (BGP loopback addressing): interface=lo finds it.
        let lo = vec![iface(1, "lo", 65536, &["127.0.0.1/8", "10.255.0.1/32"])];
        assert_eq!(
            pick("interface=^lo$", Family::V4, &lo)
                .unwrap()
                .address
                .to_string(),
            "10.255.0.1/32"
        );
    }

    #[test]
    fn usable_addresses_follow_go_is_global_unicast() {
        for ok in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
        ] {
            assert!(is_usable(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "127.0.0.2",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!is_usable(bad.parse().unwrap()), "{bad}");
        }
    }

    fn route(dest: &str, src: Option<&str>, oif: Option<u32>) -> RouteLookup {
        RouteLookup {
            destination: dest.parse().unwrap(),
            source: src.map(|s| s.parse().unwrap()),
            output_interface: oif,
        }
    }

    #[test]
    fn can_reach_takes_the_kernels_source_with_its_prefix() {
        let m: Method = "can-reach=203.0.113.9".parse().unwrap();
        let r = route("203.0.113.9", Some("10.1.0.5"), Some(2));
        let d = select(&m, Family::V4, &host(), Some(&r)).unwrap();
        assert_eq!(
            d,
            Detected {
                address: "10.1.0.5/24".parse().unwrap(),
                interface: "eth0".into(),
                mtu: 1500
            }
        );
        // The source may sit on another interface than the output one (a local destination
        // routes via lo); and the default exclusions do not apply.
        let r = route("172.17.0.1", Some("172.17.0.1"), Some(1));
        assert_eq!(
            select(&m, Family::V4, &host(), Some(&r)).unwrap().interface,
            "docker0"
        );
    }

    #[test]
    fn can_reach_prefers_the_output_interface_for_a_shared_address() {
        let ifaces = vec![
            iface(2, "eth0", 1500, &["10.1.0.5/24"]),
            iface(3, "eth1", 9000, &["10.1.0.5/32"]),
        ];
        let m: Method = "can-reach=10.1.0.9".parse().unwrap();
        let r = route("10.1.0.9", Some("10.1.0.5"), Some(2));
        assert_eq!(
            select(&m, Family::V4, &ifaces, Some(&r)).unwrap().interface,
            "eth0"
        );
    }

    #[test]
    fn can_reach_errors_say_what_the_kernel_answered() {
        let m: Method = "can-reach=203.0.113.9".parse().unwrap();
        let e = select(&m, Family::V4, &host(), None).unwrap_err();
        assert!(matches!(e, SelectError::MissingRouteLookup { .. }));
        let r = route("203.0.113.9", None, Some(2));
        let e = select(&m, Family::V4, &host(), Some(&r))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("can-reach=203.0.113.9") && e.contains("no source address"),
            "{e}"
        );
        let r = route("203.0.113.9", Some("10.99.0.1"), Some(2));
        let e = select(&m, Family::V4, &host(), Some(&r))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("from 10.99.0.1, which is on no interface"),
            "{e}"
        );
        assert!(e.contains("eth2, vxlan.trellis"), "{e}");
        let r = route("2001:db8::9", Some("2001:db8:1::5"), Some(2));
        let e = select(&m, Family::V4, &host(), Some(&r))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2001:db8::9 is not an IPv4 address"), "{e}");
    }

    #[test]
    fn explicit_address_takes_the_interface_prefix_unless_given() {
        assert_eq!(
            found("10.2.0.5", Family::V4),
            t("10.2.0.5/16", "eth1", 9000)
        );
        assert_eq!(
            found("10.2.0.5/24", Family::V4),
            t("10.2.0.5/24", "eth1", 9000)
        );
        // Even on a down interface: the operator said so.
        assert_eq!(
            found("10.3.0.5", Family::V4),
            t("10.3.0.5/24", "eth2", 1500)
        );
        let e = pick("10.9.0.1", Family::V4, &host())
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.9.0.1 is on no interface"), "{e}");
        let e = pick("2001:db8:1::5", Family::V4, &host())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an IPv4 address"), "{e}");
    }
}
