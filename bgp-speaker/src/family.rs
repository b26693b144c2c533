//! The address families this speaker carries: IPv4 and IPv6 unicast (RFC 4760).

use std::fmt;

use netgauze_iana::address_family::AddressType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    pub fn address_type(self) -> AddressType {
        match self {
            Family::Ipv4Unicast => AddressType::Ipv4Unicast,
            Family::Ipv6Unicast => AddressType::Ipv6Unicast,
        }
    }

    /// The family of a netgauze address type, `None` for families we do not carry.
    pub fn from_address_type(t: AddressType) -> Option<Family> {
        match t {
            AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
            AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of_prefix(prefix: &ipnet::IpNet) -> Family {
        match prefix {
            ipnet::IpNet::V4(_) => Family::Ipv4Unicast,
            ipnet::IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}
