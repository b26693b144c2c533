//! Pod MTU: the underlay interface's MTU minus the encapsulation overhead, unless
//! FelixConfiguration sets the tunnel MTU (`vxlanMTU`, `vxlanMTUV6`, `ipipMTU`; 0 = detect).
//! When several encapsulations are in use the pod gets the smallest, as Calico writes the
//! minimum to the file the CNI plugin reads.

use std::fmt;

use trellis_datastore::resources::FelixConfigurationSpec;

/// Linux refuses IPv4 on a device below 68 bytes (RFC 791: every module forwards 68 octets
/// unfragmented), so a smaller pod MTU would leave pods without IPv4.
pub const MIN_POD_MTU: u32 = 68;

/// How pod traffic leaves the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encapsulation {
    /// Plain routing.
    None,
    /// VXLAN over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (RFC 7348 section 5).
    VxlanV4,
    /// VXLAN over IPv6: the outer header is 40 bytes instead of 20.
    VxlanV6,
    /// IP in IPv4 (RFC 2003): one outer IPv4 header.
    Ipip,
}

impl Encapsulation {
    /// Bytes the encapsulation adds to every packet.
    pub const fn overhead(self) -> u32 {
        match self {
            Self::None => 0,
            Self::VxlanV4 => 50,
            Self::VxlanV6 => 70,
            Self::Ipip => 20,
        }
    }

    /// The FelixConfiguration field overriding this encapsulation's MTU.
    pub const fn config_field(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::VxlanV4 => Some("vxlanMTU"),
            Self::VxlanV6 => Some("vxlanMTUV6"),
            Self::Ipip => Some("ipipMTU"),
        }
    }
}

impl fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "no encapsulation",
            Self::VxlanV4 => "VXLAN over IPv4",
            Self::VxlanV6 => "VXLAN over IPv6",
            Self::Ipip => "IPIP",
        })
    }
}

/// Configured tunnel MTUs; `None` (or 0) means "detect from the underlay".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtuOverrides {
    pub vxlan: Option<u32>,
    pub vxlan_v6: Option<u32>,
    pub ipip: Option<u32>,
}

impl MtuOverrides {
    /// Reads `vxlanMTU`, `vxlanMTUV6` and `ipipMTU` (0 and unset both mean "detect").
    pub fn from_felix(spec: &FelixConfigurationSpec) -> Self {
        Self {
            vxlan: spec.vxlan_mtu(),
            vxlan_v6: spec.vxlan_mtu_v6(),
            ipip: spec.ipip_mtu(),
        }
    }

    /// The configured MTU for `encap`, if any.
    pub fn get(&self, encap: Encapsulation) -> Option<u32> {
        match encap {
            Encapsulation::None => None,
            Encapsulation::VxlanV4 => self.vxlan,
            Encapsulation::VxlanV6 => self.vxlan_v6,
            Encapsulation::Ipip => self.ipip,
        }
        .filter(|m| *m != 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    #[error(
        "underlay MTU {underlay_mtu} leaves no room for {encap} (overhead {overhead} bytes, pods \
         need at least {MIN_POD_MTU}); raise the underlay MTU or set {field} in FelixConfiguration",
        overhead = encap.overhead(),
        field = encap.config_field().unwrap_or("the MTU")
    )]
    UnderlayTooSmall {
        underlay_mtu: u32,
        encap: Encapsulation,
    },
}

/// The pod MTU for one encapsulation: `configured` when set and non-zero, otherwise the
/// underlay MTU minus the overhead.
pub fn pod_mtu(
    underlay_mtu: u32,
    encap: Encapsulation,
    configured: Option<u32>,
) -> Result<u32, MtuError> {
    if let Some(mtu) = configured.filter(|m| *m != 0) {
        return Ok(mtu);
    }
    underlay_mtu
        .checked_sub(encap.overhead())
        .filter(|mtu| *mtu >= MIN_POD_MTU)
        .ok_or(MtuError::UnderlayTooSmall {
            underlay_mtu,
            encap,
        })
}

/// The pod MTU when `encaps` are all in use (IP pools may differ): the smallest of their MTUs;
/// the underlay MTU itself when there are none.
pub fn pod_mtu_for(
    underlay_mtu: u32,
    encaps: &[Encapsulation],
    overrides: &MtuOverrides,
) -> Result<u32, MtuError> {
    if encaps.is_empty() {
        return pod_mtu(underlay_mtu, Encapsulation::None, None);
    }
    encaps
        .iter()
        .map(|e| pod_mtu(underlay_mtu, *e, overrides.get(*e)))
        .try_fold(u32::MAX, |min, mtu| Ok(min.min(mtu?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_the_overhead() {
        use Encapsulation::*;
        assert_eq!(pod_mtu(1500, None, Option::None), Ok(1500));
        assert_eq!(pod_mtu(1500, VxlanV4, Option::None), Ok(1450));
        assert_eq!(pod_mtu(1500, VxlanV6, Option::None), Ok(1430));
        assert_eq!(pod_mtu(1500, Ipip, Option::None), Ok(1480));
        assert_eq!(pod_mtu(9001, VxlanV4, Option::None), Ok(8951));
    }

    #[test]
    fn configured_mtu_wins_unless_zero() {
        assert_eq!(pod_mtu(9000, Encapsulation::VxlanV4, Some(1400)), Ok(1400));
        assert_eq!(pod_mtu(9000, Encapsulation::VxlanV4, Some(0)), Ok(8950));
    }

    #[test]
    fn too_small_an_underlay_is_an_error_naming_the_field() {
        let e = pod_mtu(100, Encapsulation::VxlanV4, None).unwrap_err();
        assert_eq!(
            e,
            MtuError::UnderlayTooSmall {
                underlay_mtu: 100,
                encap: Encapsulation::VxlanV4
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("underlay MTU 100") && msg.contains("vxlanMTU"),
            "{msg}"
        );
        assert!(pod_mtu(10, Encapsulation::Ipip, None).is_err());
        assert_eq!(pod_mtu(88, Encapsulation::Ipip, None), Ok(68));
    }

    #[test]
    fn several_encapsulations_take_the_smallest() {
        let none = MtuOverrides::default();
        use Encapsulation::*;
        assert_eq!(pod_mtu_for(1500, &[], &none), Ok(1500));
        assert_eq!(pod_mtu_for(1500, &[VxlanV4, VxlanV6], &none), Ok(1430));
        let o = MtuOverrides {
            vxlan_v6: Some(1440),
            ..MtuOverrides::default()
        };
        assert_eq!(pod_mtu_for(1500, &[VxlanV4, VxlanV6], &o), Ok(1440));
    }

    #[test]
    fn overrides_come_from_felix_configuration() {
        let spec = FelixConfigurationSpec {
            vxlan_mtu: Some(1410),
            ipip_mtu: Some(0),
            ..FelixConfigurationSpec::default()
        };
        let o = MtuOverrides::from_felix(&spec);
        assert_eq!(o.get(Encapsulation::VxlanV4), Some(1410));
        assert_eq!(o.get(Encapsulation::VxlanV6), None);
        assert_eq!(o.get(Encapsulation::Ipip), None);
        assert_eq!(o.get(Encapsulation::None), None);
        assert_eq!(pod_mtu_for(1500, &[Encapsulation::Ipip], &o), Ok(1480));
    }
}
