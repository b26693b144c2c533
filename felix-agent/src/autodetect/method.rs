//! The `IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD` strings, parsed as calico-node
//! parses them (`node/pkg/lifecycle/startup/autodetection/autodetection_methods.go`):
//! `first-found`, `interface=REGEX[,REGEX]`, `skip-interface=REGEX[,REGEX]`, `can-reach=DEST`,
//! `cidr=CIDR[,CIDR]`, plus an explicit address (what Calico reads from `IP` / `IP6`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use ipnet::IpNet;
use regex::RegexSet;

const FIRST_FOUND: &str = "first-found";
const INTERFACE: &str = "interface=";
const SKIP_INTERFACE: &str = "skip-interface=";
const CAN_REACH: &str = "can-reach=";
const CIDR: &str = "cidr=";
const K8S_INTERNAL_IP: &str = "kubernetes-internal-ip";

/// How the node's address of one family is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Method {
    /// The first usable address on an up interface not excluded by [`DEFAULT_EXCLUDES`].
    #[default]
    FirstFound,
    /// The first usable address on an up interface whose name matches one of the patterns.
    Interface(InterfacePatterns),
    /// Like `FirstFound`, also skipping interfaces whose name matches one of the patterns.
    SkipInterface(InterfacePatterns),
    /// The source address the kernel would use to reach the destination.
    CanReach(Destination),
    /// The first usable address, on an up interface, that lies in one of the CIDRs.
    Cidr(Vec<IpNet>),
    /// A configured address; the prefix length, when not given, comes from the interface that
    /// holds the address.
    Explicit {
        address: IpAddr,
        prefix_len: Option<u8>,
    },
}

/// Interface names Calico never picks for `first-found` and `skip-interface=`
/// (`DEFAULT_INTERFACES_TO_EXCLUDE`), and Trellis's own devices. Anchored at the start, as
/// Calico's are, so `ibmveth0` is not taken for a veth.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^podman.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    r"^vxlan\.calico.*",
    r"^vxlan-v6\.calico.*",
    r"^wireguard\.cali.*",
    r"^wg-v6\.cali.*",
    "^nodelocaldns.*",
    // Trellis: pod veths (`trellis` + hash) and the tunnel devices.
    "^trellis.*",
    r"^vxlan\.trellis.*",
    r"^vxlan-v6\.trellis.*",
];

/// A list of interface-name regular expressions. As in Calico (Go's `MatchString`), a pattern
/// matches anywhere in the name unless it is anchored: `eth0` also matches `veth0`.
#[derive(Debug, Clone)]
pub struct InterfacePatterns {
    set: RegexSet,
}

impl InterfacePatterns {
    /// Compiles the patterns; the error names the first one that does not compile.
    pub fn new<I, S>(patterns: I) -> Result<Self, MethodError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        // Compile one by one so the error can name the offending pattern.
        for p in &patterns {
            if let Err(e) = regex::Regex::new(p) {
                return Err(MethodError::BadRegex {
                    pattern: p.clone(),
                    reason: e.to_string(),
                });
            }
        }
        let set = RegexSet::new(&patterns).map_err(|e| MethodError::BadRegex {
            pattern: patterns.join(","),
            reason: e.to_string(),
        })?;
        Ok(Self { set })
    }

    /// [`DEFAULT_EXCLUDES`], compiled once.
    pub fn default_excludes() -> Self {
        static COMPILED: LazyLock<InterfacePatterns> = LazyLock::new(|| {
            InterfacePatterns::new(DEFAULT_EXCLUDES).expect("the default exclusions are valid")
        });
        COMPILED.clone()
    }

    pub fn patterns(&self) -> &[String] {
        self.set.patterns()
    }

    /// The first pattern that matches `name`, if any.
    pub fn first_match(&self, name: &str) -> Option<&str> {
        self.set
            .matches(name)
            .iter()
            .next()
            .map(|i| self.set.patterns()[i].as_str())
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

impl PartialEq for InterfacePatterns {
    fn eq(&self, other: &Self) -> bool {
        self.patterns() == other.patterns()
    }
}

impl Eq for InterfacePatterns {}

impl fmt::Display for InterfacePatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.patterns().join(","))
    }
}

/// What `can-reach=` points at: an address, or a host name resolved at detection time (Calico
/// dials `DEST:80` over UDP, so a name works there too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Ip(IpAddr),
    Host(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Host(h) => f.write_str(h),
        }
    }
}

/// Why a method string was rejected; each names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error(
        "unknown IP autodetection method {0:?}: expected first-found, interface=REGEX[,REGEX], \
         skip-interface=REGEX[,REGEX], can-reach=DEST, cidr=CIDR[,CIDR] or an IP address"
    )]
    Unknown(String),
    #[error("IP autodetection method {method:?}: {prefix} needs at least one value")]
    Empty {
        method: String,
        prefix: &'static str,
    },
    #[error("IP autodetection method {method:?}: item {index} of the list is empty")]
    EmptyItem { method: String, index: usize },
    #[error("invalid interface regex {pattern:?}: {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("IP autodetection method {method:?}: {cidr:?} is not a CIDR (like 10.0.0.0/8)")]
    BadCidr { method: String, cidr: String },
    #[error("IP autodetection method {method:?}: {dest:?} is not an address or a host name")]
    BadDestination { method: String, dest: String },
    #[error(
        "IP autodetection method kubernetes-internal-ip is not supported by trellis-agent: \
         pass the node's InternalIP as the address instead"
    )]
    KubernetesInternalIp,
}

impl FromStr for Method {
    type Err = MethodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == FIRST_FOUND {
            return Ok(Self::FirstFound);
        }
        // `skip-interface=` before `interface=`: neither is a prefix of the other, but keep the
        // longer prefixes first anyway.
        if let Some(rest) = s.strip_prefix(SKIP_INTERFACE) {
            return Ok(Self::SkipInterface(InterfacePatterns::new(split_list(
                s,
                SKIP_INTERFACE,
                rest,
            )?)?));
        }
        if let Some(rest) = s.strip_prefix(INTERFACE) {
            return Ok(Self::Interface(InterfacePatterns::new(split_list(
                s, INTERFACE, rest,
            )?)?));
        }
        if let Some(rest) = s.strip_prefix(CIDR) {
            let cidrs = split_list(s, CIDR, rest)?
                .into_iter()
                .map(|c| {
                    c.parse::<IpNet>().map_err(|_| MethodError::BadCidr {
                        method: s.to_owned(),
                        cidr: c.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::Cidr(cidrs));
        }
        if let Some(rest) = s.strip_prefix(CAN_REACH) {
            return parse_destination(s, rest.trim()).map(Self::CanReach);
        }
        if s.starts_with(K8S_INTERNAL_IP) {
            return Err(MethodError::KubernetesInternalIp);
        }
        if let Ok(address) = s.parse::<IpAddr>() {
            return Ok(Self::Explicit {
                address,
                prefix_len: None,
            });
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Explicit {
                address: net.addr(),
                prefix_len: Some(net.prefix_len()),
            });
        }
        Err(MethodError::Unknown(s.to_owned()))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FirstFound => f.write_str(FIRST_FOUND),
            Self::Interface(p) => write!(f, "{INTERFACE}{p}"),
            Self::SkipInterface(p) => write!(f, "{SKIP_INTERFACE}{p}"),
            Self::CanReach(d) => write!(f, "{CAN_REACH}{d}"),
            Self::Cidr(cidrs) => {
                f.write_str(CIDR)?;
                for (i, c) in cidrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            Self::Explicit {
                address,
                prefix_len: Some(len),
            } => write!(f, "{address}/{len}"),
            Self::Explicit {
                address,
                prefix_len: None,
            } => write!(f, "{address}"),
        }
    }
}

/// Calico splits lists on `\s*,\s*`; an empty item there becomes a regex matching every name,
/// which is never what was meant, so it is an error here.
fn split_list<'a>(
    method: &str,
    prefix: &'static str,
    rest: &'a str,
) -> Result<Vec<&'a str>, MethodError> {
    if rest.trim().is_empty() {
        return Err(MethodError::Empty {
            method: method.to_owned(),
            prefix,
        });
    }
    rest.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, item)| {
            if item.is_empty() {
                Err(MethodError::EmptyItem {
                    method: method.to_owned(),
                    index: i + 1,
                })
            } else {
                Ok(item)
            }
        })
        .collect()
}

fn parse_destination(method: &str, dest: &str) -> Result<Destination, MethodError> {
    if dest.is_empty() {
        return Err(MethodError::Empty {
            method: method.to_owned(),
            prefix: CAN_REACH,
        });
    }
    // Accept `[2001:db8::1]` as well as the bare form Calico expects.
    let bare = dest
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(dest);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Destination::Ip(ip));
    }
    // RFC 1123 host names: letters, digits, hyphens and dots, at most 253 characters.
    let valid_host = bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid_host {
        Ok(Destination::Host(bare.to_owned()))
    } else {
        Err(MethodError::BadDestination {
            method: method.to_owned(),
            dest: dest.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Method {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn patterns(p: &[&str]) -> InterfacePatterns {
        InterfacePatterns::new(p).unwrap()
    }

    #[test]
    fn parses_every_calico_method() {
        assert_eq!(parse(""), Method::FirstFound);
        assert_eq!(parse("first-found"), Method::FirstFound);
        assert_eq!(
            parse("interface=eth.*, ens[0-9]+"),
            Method::Interface(patterns(&["eth.*", "ens[0-9]+"]))
        );
        assert_eq!(
            parse("skip-interface=enp0s8"),
            Method::SkipInterface(patterns(&["enp0s8"]))
        );
        assert_eq!(
            parse("can-reach=8.8.8.8"),
            Method::CanReach(Destination::Ip("8.8.8.8".parse().unwrap()))
        );
        assert_eq!(
            parse("can-reach=[2001:db8::1]"),
            Method::CanReach(Destination::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            parse("can-reach=www.example.com"),
            Method::CanReach(Destination::Host("www.example.com".into()))
        );
        assert_eq!(
            parse("cidr=10.0.0.0/8 ,192.168.1.7/24"),
            Method::Cidr(vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.7/24".parse().unwrap()
            ])
        );
        assert_eq!(
            parse("192.0.2.7"),
            Method::Explicit {
                address: "192.0.2.7".parse().unwrap(),
                prefix_len: None
            }
        );
        assert_eq!(
            parse("2001:db8::7/64"),
            Method::Explicit {
                address: "2001:db8::7".parse().unwrap(),
                prefix_len: Some(64)
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "first-found",
            "interface=eth.*,ens[0-9]+",
            "skip-interface=enp0s8",
            "can-reach=8.8.8.8",
            "can-reach=www.example.com",
            "cidr=10.0.0.0/8,fd00::/8",
            "192.0.2.7",
            "192.0.2.7/24",
        ] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<Method>().unwrap_err().to_string();
        assert!(err("first-fnd").contains("\"first-fnd\""));
        assert!(err("interface=").contains("interface= needs at least one value"));
        assert!(err("interface=eth0,,eth1").contains("item 2"));
        let e = err("interface=eth0,eth[");
        assert!(e.contains("\"eth[\""), "{e}");
        let e = err("cidr=10.0.0.0/8,10.0.0.300/24");
        assert!(e.contains("\"10.0.0.300/24\""), "{e}");
        assert!(err("cidr=10.0.0.0/33").contains("\"10.0.0.0/33\""));
        let e = err("can-reach=bad_host!");
        assert!(e.contains("\"bad_host!\""), "{e}");
        assert!(err("can-reach=").contains("can-reach= needs at least one value"));
        assert!(err("kubernetes-internal-ip").contains("not supported"));
    }

    #[test]
    fn patterns_match_unanchored_like_go() {
        let p = patterns(&["eth0"]);
        assert!(p.is_match("eth0"));
        assert!(
            p.is_match("veth0"),
            "Calico's MatchString is a substring match"
        );
        let d = InterfacePatterns::default_excludes();
        for name in [
            "docker0",
            "lo",
            "veth1234",
            "cali0123456789a",
            "tunl0",
            "vxlan.calico",
            "vxlan.trellis",
            "trellis0123456789a",
            "kube-ipvs0",
            "nodelocaldns",
        ] {
            assert!(d.is_match(name), "{name} should be excluded");
        }
        for name in ["eth0", "ens3", "ibmveth0", "bond0", "vxlan0", "br-ex"] {
            assert!(!d.is_match(name), "{name} should not be excluded");
        }
        assert_eq!(d.first_match("docker0"), Some("^docker.*"));
    }
}
