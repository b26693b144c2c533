//! SDK shapes to the plain types of [`super::types`]. A missing or unparsable field the manager
//! relies on is an error naming the field, never a silent default.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aws_sdk_ec2::types as sdk;
use ipnet::Ipv4Net;

use super::types::{Eni, EniAttachment, EniStatus, InstanceTypeInfo, PrivateIp, Subnet};

/// Why a response could not be read: a field name and the problem.
pub(crate) type Malformed = String;

pub(crate) fn eni(ni: &sdk::NetworkInterface) -> Result<Eni, Malformed> {
    let id = required(ni.network_interface_id(), "NetworkInterfaceId")?;
    let mut private_ips = ni
        .private_ip_addresses()
        .iter()
        .map(|ip| {
            Ok(PrivateIp {
                address: parse_ip(ip.private_ip_address(), "PrivateIpAddress")?,
                primary: ip.primary().unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, Malformed>>()
        .map_err(|e| format!("{id}: {e}"))?;
    // Primary first; `sort_by_key` is stable, so secondaries keep EC2's order.
    private_ips.sort_by_key(|ip| !ip.primary);
    let prefixes = ni
        .ipv4_prefixes()
        .iter()
        .map(|p| parse_net(p.ipv4_prefix(), "Ipv4Prefix"))
        .collect::<Result<Vec<_>, Malformed>>()
        .map_err(|e| format!("{id}: {e}"))?;
    let attachment = match ni.attachment() {
        Some(att) if att.attachment_id().is_some() => Some(EniAttachment {
            id: required(att.attachment_id(), "Attachment.AttachmentId")?,
            instance_id: att.instance_id().unwrap_or_default().to_owned(),
            device_index: non_negative(att.device_index(), "Attachment.DeviceIndex")
                .map_err(|e| format!("{id}: {e}"))?,
            // Absent on single-card instances (and in moto): card 0.
            network_card_index: non_negative(
                Some(att.network_card_index().unwrap_or(0)),
                "Attachment.NetworkCardIndex",
            )
            .map_err(|e| format!("{id}: {e}"))?,
            delete_on_termination: att.delete_on_termination().unwrap_or(false),
        }),
        _ => None,
    };
    Ok(Eni {
        mac: ni.mac_address().unwrap_or_default().to_owned(),
        subnet_id: required(ni.subnet_id(), "SubnetId").map_err(|e| format!("{id}: {e}"))?,
        vpc_id: ni.vpc_id().unwrap_or_default().to_owned(),
        status: EniStatus::parse(ni.status().map(|s| s.as_str()).unwrap_or("")),
        description: ni.description().unwrap_or_default().to_owned(),
        attachment,
        private_ips,
        prefixes,
        security_groups: ni
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect(),
        tags: tags(ni.tag_set()),
        id,
    })
}

pub(crate) fn subnet(s: &sdk::Subnet) -> Result<Subnet, Malformed> {
    Ok(Subnet {
        id: required(s.subnet_id(), "SubnetId")?,
        vpc_id: s.vpc_id().unwrap_or_default().to_owned(),
        cidr: parse_net(s.cidr_block(), "CidrBlock")?,
        available_ips: non_negative(s.available_ip_address_count(), "AvailableIpAddressCount")?,
        availability_zone: s.availability_zone().unwrap_or_default().to_owned(),
    })
}

pub(crate) fn instance_type(info: &sdk::InstanceTypeInfo) -> Result<InstanceTypeInfo, Malformed> {
    let network = info.network_info().ok_or("NetworkInfo: missing")?;
    Ok(InstanceTypeInfo {
        instance_type: info
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .ok_or("InstanceType: missing")?,
        max_enis: non_negative(
            network.maximum_network_interfaces(),
            "NetworkInfo.MaximumNetworkInterfaces",
        )?,
        ipv4_per_eni: non_negative(
            network.ipv4_addresses_per_interface(),
            "NetworkInfo.Ipv4AddressesPerInterface",
        )?,
        vcpus: non_negative(
            info.v_cpu_info().and_then(|v| v.default_v_cpus()),
            "VCpuInfo.DefaultVCpus",
        )?,
        hypervisor: info.hypervisor().map(|h| h.as_str().to_owned()),
        bare_metal: info.bare_metal().unwrap_or(false),
    })
}

pub(crate) fn tags(tags: &[sdk::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

pub(crate) fn required(value: Option<&str>, field: &str) -> Result<String, Malformed> {
    value
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("{field}: missing"))
}

pub(crate) fn parse_ip(value: Option<&str>, field: &str) -> Result<Ipv4Addr, Malformed> {
    let text = value.ok_or_else(|| format!("{field}: missing"))?;
    text.parse()
        .map_err(|_| format!("{field}: {text:?} is not an IPv4 address"))
}

pub(crate) fn parse_net(value: Option<&str>, field: &str) -> Result<Ipv4Net, Malformed> {
    let text = value.ok_or_else(|| format!("{field}: missing"))?;
    text.parse()
        .map_err(|_| format!("{field}: {text:?} is not an IPv4 CIDR"))
}

fn non_negative(value: Option<i32>, field: &str) -> Result<u32, Malformed> {
    let n = value.ok_or_else(|| format!("{field}: missing"))?;
    u32::try_from(n).map_err(|_| format!("{field}: {n} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eni_puts_primary_first_and_reads_prefixes_and_tags() {
        let ni = sdk::NetworkInterface::builder()
            .network_interface_id("eni-1")
            .subnet_id("subnet-1")
            .mac_address("0e:00:00:00:00:01")
            .status(sdk::NetworkInterfaceStatus::InUse)
            .private_ip_addresses(
                sdk::NetworkInterfacePrivateIpAddress::builder()
                    .private_ip_address("10.0.0.9")
                    .primary(false)
                    .build(),
            )
            .private_ip_addresses(
                sdk::NetworkInterfacePrivateIpAddress::builder()
                    .private_ip_address("10.0.0.4")
                    .primary(true)
                    .build(),
            )
            .ipv4_prefixes(
                sdk::Ipv4PrefixSpecification::builder()
                    .ipv4_prefix("10.0.0.32/28")
                    .build(),
            )
            .tag_set(sdk::Tag::builder().key("k").value("v").build())
            .attachment(
                sdk::NetworkInterfaceAttachment::builder()
                    .attachment_id("eni-attach-1")
                    .instance_id("i-1")
                    .device_index(1)
                    .build(),
            )
            .build();
        let eni = eni(&ni).expect("well-formed ENI converts");
        assert_eq!(eni.primary_ip(), Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(eni.private_ips[0].address, Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(eni.secondary_ips(), vec![Ipv4Addr::new(10, 0, 0, 9)]);
        assert_eq!(
            eni.prefixes,
            vec!["10.0.0.32/28".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(eni.tags["k"], "v");
        assert_eq!(eni.status, EniStatus::InUse);
        assert_eq!(eni.device_index(), Some(1));
    }

    #[test]
    fn malformed_fields_are_named() {
        let ni = sdk::NetworkInterface::builder()
            .network_interface_id("eni-2")
            .subnet_id("subnet-1")
            .private_ip_addresses(
                sdk::NetworkInterfacePrivateIpAddress::builder()
                    .private_ip_address("10.0.0.300")
                    .build(),
            )
            .build();
        let err = eni(&ni).unwrap_err();
        assert_eq!(
            err,
            "eni-2: PrivateIpAddress: \"10.0.0.300\" is not an IPv4 address"
        );
        let missing = sdk::NetworkInterface::builder().build();
        assert_eq!(eni(&missing).unwrap_err(), "NetworkInterfaceId: missing");
    }
}
