//! Per-instance-type network limits: how many ENIs an instance takes and how many IPv4
//! addresses each ENI holds. Everything else in the VPC backend (max pods, the warm pool's
//! ceilings) is arithmetic on these two numbers.
//!
//! The limits come from a table generated into the crate (`limits_table.rs`, by
//! `vpc/scripts/gen_limits.py` from DescribeInstanceTypes data), so a node needs no EC2 call
//! to know them; an instance type newer than the table is looked up through a
//! [`LimitsSource`] (DescribeInstanceTypes) by [`resolve`].

use async_trait::async_trait;

use crate::limits_table::INSTANCE_LIMITS;

/// The hypervisor of an instance type. Prefix delegation needs Nitro (or bare metal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypervisor {
    Nitro,
    Xen,
    /// Anything else, and none: bare-metal types report no hypervisor.
    Other,
}

impl Hypervisor {
    /// DescribeInstanceTypes' `Hypervisor` value (`nitro`, `xen`, absent on bare metal).
    pub fn from_api(value: Option<&str>) -> Hypervisor {
        match value {
            Some("nitro") => Hypervisor::Nitro,
            Some("xen") => Hypervisor::Xen,
            _ => Hypervisor::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hypervisor::Nitro => "nitro",
            Hypervisor::Xen => "xen",
            Hypervisor::Other => "other",
        }
    }
}

/// The network limits of one instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// ENIs the node can use for pods: on instances with several network cards, those of the
    /// default card only, as the AWS VPC CNI counts them (and so `eni-max-pods.txt`): pod ENIs
    /// are attached to the default card.
    pub enis: u32,
    /// IPv4 addresses per ENI, the ENI's own primary address included. With prefix
    /// delegation the same number bounds the /28 prefixes plus the primary address.
    pub ipv4_per_eni: u32,
    /// Default vCPUs: the EKS max-pods calculator caps by it.
    pub vcpus: u32,
    pub hypervisor: Hypervisor,
    pub bare_metal: bool,
    /// Network cards of the instance.
    pub network_cards: u32,
    /// ENIs over all network cards (`NetworkInfo.MaximumNetworkInterfaces`).
    pub enis_all_cards: u32,
}

impl InstanceLimits {
    /// Whether EC2 assigns /28 prefixes to this type's ENIs: Nitro instances and bare metal,
    /// the condition the AWS VPC CNI checks before enabling prefix delegation.
    pub fn supports_prefix_delegation(&self) -> bool {
        self.hypervisor == Hypervisor::Nitro || self.bare_metal
    }
}

/// The limits of a type from the generated table, `None` for a type the table lacks.
pub fn limits_for(instance_type: &str) -> Option<InstanceLimits> {
    INSTANCE_LIMITS
        .binary_search_by(|(name, _)| (*name).cmp(instance_type))
        .ok()
        .map(|i| INSTANCE_LIMITS[i].1)
}

/// How many instance types the generated table holds.
pub fn table_len() -> usize {
    INSTANCE_LIMITS.len()
}

/// The fields of one DescribeInstanceTypes entry that the limits come from, as plain numbers
/// (each optional, as in the API), so that the EC2 client converts without this module
/// depending on SDK types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceTypeDescription {
    pub instance_type: String,
    /// `NetworkInfo.MaximumNetworkInterfaces`
    pub maximum_network_interfaces: Option<i32>,
    /// `NetworkInfo.Ipv4AddressesPerInterface`
    pub ipv4_addresses_per_interface: Option<i32>,
    /// `NetworkInfo.DefaultNetworkCardIndex`
    pub default_network_card_index: Option<i32>,
    /// `NetworkInfo.NetworkCards`: (`NetworkCardIndex`, `MaximumNetworkInterfaces`)
    pub network_cards: Vec<(Option<i32>, Option<i32>)>,
    /// `VCpuInfo.DefaultVCpus`
    pub default_vcpus: Option<i32>,
    /// `Hypervisor`
    pub hypervisor: Option<String>,
    /// `BareMetal`
    pub bare_metal: Option<bool>,
}

/// A DescribeInstanceTypes entry the limits cannot be taken from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescriptionError {
    #[error(
        "instance type {instance_type}: DescribeInstanceTypes gave {} for {field}, not a positive \
         number",
        value.map_or("nothing".to_string(), |v| v.to_string())
    )]
    Field {
        instance_type: String,
        field: &'static str,
        value: Option<i32>,
    },
    #[error(
        "instance type {instance_type}: its default network card {index} is not among its \
         {count} network cards"
    )]
    DefaultCard {
        instance_type: String,
        index: i32,
        count: usize,
    },
}

/// Converts a DescribeInstanceTypes entry with the rule the generator applies (the ENIs of
/// the default network card when there are several), so a type looked up live gets the
/// numbers it would have in the table.
pub fn limits_from_description(
    d: &InstanceTypeDescription,
) -> Result<InstanceLimits, DescriptionError> {
    let positive = |field: &'static str, value: Option<i32>| match value {
        Some(v) if v > 0 => Ok(v as u32),
        _ => Err(DescriptionError::Field {
            instance_type: d.instance_type.clone(),
            field,
            value,
        }),
    };
    let enis_all_cards = positive(
        "NetworkInfo.MaximumNetworkInterfaces",
        d.maximum_network_interfaces,
    )?;
    let enis = if d.network_cards.len() > 1 {
        let index = d.default_network_card_index.unwrap_or(0);
        let card = d
            .network_cards
            .iter()
            .find(|(i, _)| i.unwrap_or(-1) == index)
            .ok_or_else(|| DescriptionError::DefaultCard {
                instance_type: d.instance_type.clone(),
                index,
                count: d.network_cards.len(),
            })?;
        positive("NetworkCards[default].MaximumNetworkInterfaces", card.1)?
    } else {
        enis_all_cards
    };
    Ok(InstanceLimits {
        enis,
        ipv4_per_eni: positive(
            "NetworkInfo.Ipv4AddressesPerInterface",
            d.ipv4_addresses_per_interface,
        )?,
        vcpus: positive("VCpuInfo.DefaultVCpus", d.default_vcpus)?,
        hypervisor: Hypervisor::from_api(d.hypervisor.as_deref()),
        bare_metal: d.bare_metal.unwrap_or(false),
        network_cards: d.network_cards.len().max(1) as u32,
        enis_all_cards,
    })
}

/// Where limits of a type missing from the table come from: DescribeInstanceTypes, in the
/// agent through the EC2 client, in tests a fake.
#[async_trait]
pub trait LimitsSource: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The limits of `instance_type`, `None` when EC2 does not know the type.
    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<Option<InstanceLimits>, Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError<E: std::error::Error + 'static> {
    #[error(
        "unknown instance type {instance_type:?}: not in the built-in table and not known to \
         DescribeInstanceTypes"
    )]
    UnknownInstanceType { instance_type: String },
    #[error("looking up instance type {instance_type:?} with DescribeInstanceTypes")]
    Describe {
        instance_type: String,
        #[source]
        source: E,
    },
}

/// The limits of `instance_type`: the generated table first (no EC2 call for any type it
/// knows), then `source`.
pub async fn resolve<E: std::error::Error + Send + Sync + 'static>(
    instance_type: &str,
    source: &dyn LimitsSource<Error = E>,
) -> Result<InstanceLimits, ResolveError<E>> {
    if let Some(limits) = limits_for(instance_type) {
        return Ok(limits);
    }
    match source.describe_instance_type(instance_type).await {
        Ok(Some(limits)) => Ok(limits),
        Ok(None) => Err(ResolveError::UnknownInstanceType {
            instance_type: instance_type.to_string(),
        }),
        Err(source) => Err(ResolveError::Describe {
            instance_type: instance_type.to_string(),
            source,
        }),
    }
}

/// DescribeInstanceTypes through the node's EC2 client: the fallback for a type newer than
/// the table. EC2's `InvalidInstanceType` is "unknown", anything else a failed lookup.
pub struct Ec2Limits<'a>(pub &'a dyn crate::ec2::Ec2);

impl std::fmt::Debug for Ec2Limits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ec2Limits")
    }
}

/// EC2's numbers for a type: its ENI count is over all network cards (DescribeInstanceTypes
/// as the client reads it does not break it down), which is the default card's on every
/// single-card type.
impl From<&crate::ec2::InstanceTypeInfo> for InstanceLimits {
    fn from(info: &crate::ec2::InstanceTypeInfo) -> InstanceLimits {
        InstanceLimits {
            enis: info.max_enis,
            ipv4_per_eni: info.ipv4_per_eni,
            vcpus: info.vcpus,
            hypervisor: Hypervisor::from_api(info.hypervisor.as_deref()),
            bare_metal: info.bare_metal,
            network_cards: 1,
            enis_all_cards: info.max_enis,
        }
    }
}

#[async_trait]
impl LimitsSource for Ec2Limits<'_> {
    type Error = crate::ec2::Ec2Error;

    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<Option<InstanceLimits>, crate::ec2::Ec2Error> {
        match self.0.describe_instance_type(instance_type).await {
            Ok(info) => Ok(Some(InstanceLimits::from(&info))),
            Err(crate::ec2::Ec2Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn table_is_sorted_without_duplicates() {
        assert!(INSTANCE_LIMITS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(table_len(), 1263);
    }

    #[test]
    fn known_types() {
        let t3_small = limits_for("t3.small").unwrap();
        assert_eq!(
            t3_small,
            InstanceLimits {
                enis: 3,
                ipv4_per_eni: 4,
                vcpus: 2,
                hypervisor: Hypervisor::Nitro,
                bare_metal: false,
                network_cards: 1,
                enis_all_cards: 3,
            }
        );
        let m4 = limits_for("m4.large").unwrap();
        assert_eq!(
            (m4.enis, m4.ipv4_per_eni, m4.hypervisor),
            (2, 10, Hypervisor::Xen)
        );
        assert!(!m4.supports_prefix_delegation());
        // Bare metal has no hypervisor but takes prefixes.
        let metal = limits_for("m5.metal").unwrap();
        assert_eq!(
            (metal.hypervisor, metal.bare_metal),
            (Hypervisor::Other, true)
        );
        assert!(metal.supports_prefix_delegation());
        assert_eq!(limits_for("t3.gigantic"), None);
        assert_eq!(limits_for(""), None);
    }

    #[test]
    fn multi_card_types_count_the_default_card() {
        let p4d = limits_for("p4d.24xlarge").unwrap();
        assert_eq!(
            (p4d.enis, p4d.enis_all_cards, p4d.network_cards),
            (15, 60, 4)
        );
    }

    fn described(cards: Vec<(Option<i32>, Option<i32>)>) -> InstanceTypeDescription {
        InstanceTypeDescription {
            instance_type: "x9.large".to_string(),
            maximum_network_interfaces: Some(60),
            ipv4_addresses_per_interface: Some(50),
            default_network_card_index: Some(1),
            network_cards: cards,
            default_vcpus: Some(96),
            hypervisor: Some("nitro".to_string()),
            bare_metal: Some(false),
        }
    }

    #[test]
    fn description_converts_with_the_default_card_rule() {
        let d = described(vec![(Some(0), Some(15)), (Some(1), Some(14))]);
        let l = limits_from_description(&d).unwrap();
        assert_eq!((l.enis, l.enis_all_cards, l.network_cards), (14, 60, 2));
        assert_eq!(
            (l.ipv4_per_eni, l.vcpus, l.hypervisor),
            (50, 96, Hypervisor::Nitro)
        );

        let single = described(vec![(Some(0), Some(60))]);
        assert_eq!(limits_from_description(&single).unwrap().enis, 60);
    }

    #[test]
    fn description_errors_name_type_and_field() {
        let mut d = described(vec![(Some(0), Some(15)), (Some(2), Some(15))]);
        let err = limits_from_description(&d).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance type x9.large: its default network card 1 is not among its 2 network cards"
        );
        d.network_cards.truncate(1);
        d.ipv4_addresses_per_interface = None;
        let err = limits_from_description(&d).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance type x9.large: DescribeInstanceTypes gave nothing for \
             NetworkInfo.Ipv4AddressesPerInterface, not a positive number"
        );
        d.ipv4_addresses_per_interface = Some(10);
        d.default_vcpus = Some(0);
        assert_eq!(
            limits_from_description(&d).unwrap_err().to_string(),
            "instance type x9.large: DescribeInstanceTypes gave 0 for VCpuInfo.DefaultVCpus, not \
             a positive number"
        );
    }

    /// A DescribeInstanceTypes stand-in that knows one type and counts its calls.
    #[derive(Debug, Default)]
    struct FakeSource {
        calls: AtomicUsize,
        fail: bool,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("RequestLimitExceeded")]
    struct Throttled;

    #[async_trait]
    impl LimitsSource for FakeSource {
        type Error = Throttled;
        async fn describe_instance_type(
            &self,
            instance_type: &str,
        ) -> Result<Option<InstanceLimits>, Throttled> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(Throttled);
            }
            Ok((instance_type == "z9.new").then(|| InstanceLimits {
                enis: 4,
                ipv4_per_eni: 15,
                ..limits_for("m5.xlarge").unwrap()
            }))
        }
    }

    #[tokio::test]
    async fn resolve_uses_the_table_then_the_source() {
        let source = FakeSource::default();
        let l = resolve("m5.large", &source).await.unwrap();
        assert_eq!((l.enis, l.ipv4_per_eni), (3, 10));
        assert_eq!(
            source.calls.load(Ordering::SeqCst),
            0,
            "table hit calls no EC2"
        );

        let l = resolve("z9.new", &source).await.unwrap();
        assert_eq!((l.enis, l.ipv4_per_eni), (4, 15));
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);

        let err = resolve("z9.unknown", &source).await.unwrap_err();
        assert!(matches!(err, ResolveError::UnknownInstanceType { .. }));
        assert_eq!(
            err.to_string(),
            "unknown instance type \"z9.unknown\": not in the built-in table and not known to \
             DescribeInstanceTypes"
        );
    }

    #[tokio::test]
    async fn resolve_reports_source_failures_with_the_type() {
        let source = FakeSource {
            fail: true,
            ..FakeSource::default()
        };
        let err = resolve("z9.new", &source).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "looking up instance type \"z9.new\" with DescribeInstanceTypes"
        );
        let cause = std::error::Error::source(&err).unwrap();
        assert_eq!(cause.to_string(), "RequestLimitExceeded");
    }
}
