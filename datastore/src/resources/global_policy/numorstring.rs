//! Calico's `numorstring` values used in rules: a protocol (name or number) and a port (number,
//! range or name), with the JSON forms Calico reads and writes
//! (`api/pkg/lib/numorstring/{protocol,port}.go`).

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::resources::network_policy::check_port_name;
use crate::validation::ValidationErrors;

/// Calico `numorstring.Protocol`: one of the names Calico accepts (exact case) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    Sctp,
    UdpLite,
    /// Written as a number; 0 parses but fails validation, as upstream.
    Number(u8),
}

/// Calico `numorstring.Port`: a number, a range `"min:max"`, or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    /// `min == max` is a single port (written as a plain number).
    Range {
        min: u16,
        max: u16,
    },
    Named(String),
}

impl IpProtocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::IcmpV6 => 58,
            IpProtocol::Sctp => 132,
            IpProtocol::UdpLite => 136,
            IpProtocol::Number(n) => n,
        }
    }

    /// Whether rules may match ports with it: TCP, UDP, SCTP, by name or number. (Calico's
    /// `Protocol.SupportsPorts`; UDPLite is deliberately not included, as upstream.)
    pub fn supports_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132)
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "TCP" => IpProtocol::Tcp,
            "UDP" => IpProtocol::Udp,
            "ICMP" => IpProtocol::Icmp,
            "ICMPv6" => IpProtocol::IcmpV6,
            "SCTP" => IpProtocol::Sctp,
            "UDPLite" => IpProtocol::UdpLite,
            _ => return None,
        })
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpProtocol::Tcp => "TCP",
            IpProtocol::Udp => "UDP",
            IpProtocol::Icmp => "ICMP",
            IpProtocol::IcmpV6 => "ICMPv6",
            IpProtocol::Sctp => "SCTP",
            IpProtocol::UdpLite => "UDPLite",
            IpProtocol::Number(n) => return write!(f, "{n}"),
        })
    }
}

impl Serialize for IpProtocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IpProtocol::Number(n) => serializer.serialize_u8(*n),
            named => serializer.collect_str(named),
        }
    }
}

/// Like Calico's `Uint8OrString.UnmarshalJSON`: numbers (also as digit strings) up to 255, or a
/// protocol name in Calico's exact spelling.
impl<'de> Deserialize<'de> for IpProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = IpProtocol;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a protocol number 1-255")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u8::try_from(v)
                    .map(IpProtocol::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u8::try_from(v)
                    .map(IpProtocol::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                IpProtocol::from_name(v)
                    .or_else(|| v.parse::<u8>().ok().map(IpProtocol::Number))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Port {
    pub fn single(port: u16) -> Self {
        Port::Range {
            min: port,
            max: port,
        }
    }

    /// Calico `validatePort` plus the IANA name check for named ports.
    pub(super) fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        match self {
            Port::Range { min, max } => {
                if *min == 0 {
                    errs.add(path, "port number must be between 1 and 65535");
                } else if min > max {
                    errs.add(path, format!("port range {min}:{max} is reversed"));
                }
            }
            Port::Named(name) => check_port_name(errs, path, name),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(name) => f.write_str(name),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => serializer.serialize_u16(*min),
            other => serializer.collect_str(other),
        }
    }
}

/// Calico `Port.UnmarshalJSON` / `PortFromString`: a number, a string of digits, `"min:max"`,
/// or else a port name (checked by validation).
impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Port;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a range \"min:max\" or a port name")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                let number = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
                };
                if digits(v) {
                    return number(v).map(Port::single);
                }
                if let Some((a, b)) = v.split_once(':').filter(|(a, b)| digits(a) && digits(b)) {
                    return Ok(Port::Range {
                        min: number(a)?,
                        max: number(b)?,
                    });
                }
                Ok(Port::Named(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
