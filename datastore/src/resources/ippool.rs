//! IPPool: a CIDR pods get addresses from, carved into blocks that nodes claim (Calico semantics).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::selector::Selector;
use crate::validation::ValidationErrors;

pub type IpPool = Object<IpPoolSpec>;

/// When to encapsulate traffic to another node's pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    /// Only when the remote node is in another subnet.
    CrossSubnet,
}

/// What addresses of the pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    pub cidr: IpNet,
    /// Prefix length of the blocks nodes claim; default 26 (IPv4) / 122 (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default, rename = "ipipMode")]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A disabled pool hands out no new addresses; existing ones stay.
    #[serde(default)]
    pub disabled: bool,
    /// Calico selector over node labels; empty = all nodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    #[serde(default = "default_allowed_uses")]
    pub allowed_uses: Vec<AllowedUse>,
}

fn default_allowed_uses() -> Vec<AllowedUse> {
    vec![AllowedUse::Workload, AllowedUse::Tunnel]
}

/// Calico's limits: a block is between /20 and /32 for IPv4, /116 and /128 for IPv6.
pub const V4_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 20..=32;
pub const V6_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 116..=128;

impl IpPoolSpec {
    pub fn new(cidr: IpNet) -> Self {
        Self {
            cidr,
            block_size: None,
            vxlan_mode: EncapMode::Never,
            ipip_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            node_selector: String::new(),
            disable_bgp_export: false,
            allowed_uses: default_allowed_uses(),
        }
    }

    /// Block prefix length, defaulted by address family.
    pub fn block_size(&self) -> u8 {
        self.block_size.unwrap_or(match self.cidr {
            IpNet::V4(_) => 26,
            IpNet::V6(_) => 122,
        })
    }

    /// Whether the pool's node selector selects a node with these labels. An unparsable selector
    /// (which validation rejects) selects nothing.
    pub fn selects_node(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        if self.node_selector.trim().is_empty() {
            return true;
        }
        Selector::parse(&self.node_selector)
            .map(|s| s.matches(labels))
            .unwrap_or(false)
    }

    pub fn allows_workloads(&self) -> bool {
        self.allowed_uses.contains(&AllowedUse::Workload)
    }
}

impl Spec for IpPoolSpec {
    const KIND: &'static str = "IPPool";
    const KEY_PREFIX: &'static str = keys::IPPOOLS;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut ValidationErrors) {
        let cidr = self.cidr;
        if cidr.trunc() != cidr {
            errs.add(
                "spec.cidr",
                format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
            );
        }
        let size = self.block_size();
        let (range, family) = match cidr {
            IpNet::V4(_) => (V4_BLOCK_SIZES, "IPv4"),
            IpNet::V6(_) => (V6_BLOCK_SIZES, "IPv6"),
        };
        if !range.contains(&size) {
            errs.add(
                "spec.blockSize",
                format!(
                    "must be between {} and {} for an {family} pool, got {size}",
                    range.start(),
                    range.end()
                ),
            );
        } else if size < cidr.prefix_len() {
            errs.add(
                "spec.blockSize",
                format!(
                    "/{size} blocks do not fit in the /{} pool {cidr}",
                    cidr.prefix_len()
                ),
            );
        }
        if self.vxlan_mode != EncapMode::Never && self.ipip_mode != EncapMode::Never {
            errs.add(
                "spec.ipipMode",
                "vxlanMode and ipipMode cannot both be enabled; set one of them to Never",
            );
        }
        if matches!(cidr, IpNet::V6(_)) && self.ipip_mode != EncapMode::Never {
            errs.add(
                "spec.ipipMode",
                "IPIP is IPv4 only; use vxlanMode for an IPv6 pool",
            );
        }
        if !self.node_selector.trim().is_empty() {
            if let Err(e) = Selector::parse(&self.node_selector) {
                errs.add("spec.nodeSelector", e.to_string());
            }
        }
        if self.allowed_uses.is_empty() {
            errs.add(
                "spec.allowedUses",
                "must list at least one of Workload, Tunnel",
            );
        }
        // A pool at least as big as loopback/multicast/link-local ranges would break the node.
        for (reserved, what) in [
            ("127.0.0.0/8", "loopback"),
            ("224.0.0.0/4", "multicast"),
            ("169.254.0.0/16", "link-local"),
            ("::1/128", "loopback"),
            ("fe80::/10", "link-local"),
            ("ff00::/8", "multicast"),
        ] {
            let reserved: IpNet = reserved.parse().expect("constant CIDR");
            if overlaps(&cidr, &reserved) {
                errs.add(
                    "spec.cidr",
                    format!("{cidr} overlaps the {what} range {reserved}"),
                );
            }
        }
    }
}

/// Whether two CIDRs share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks `new` against the pools already stored: no overlap with another pool, and the CIDR and
/// block size of an existing pool cannot change (its blocks are already carved).
pub fn validate_against_existing(
    new: &IpPool,
    existing: &[IpPool],
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::new();
    for other in existing {
        if other.metadata.name == new.metadata.name {
            if other.spec.cidr != new.spec.cidr {
                errs.add(
                    "spec.cidr",
                    format!("cannot change the CIDR of pool {} from {} (create a new pool, then disable and delete this one)", other.metadata.name, other.spec.cidr),
                );
            }
            if other.spec.block_size() != new.spec.block_size() {
                errs.add(
                    "spec.blockSize",
                    format!(
                        "cannot change the block size of pool {} from {}",
                        other.metadata.name,
                        other.spec.block_size()
                    ),
                );
            }
        } else if overlaps(&other.spec.cidr, &new.spec.cidr) {
            errs.add(
                "spec.cidr",
                format!(
                    "{} overlaps IPPool {} ({})",
                    new.spec.cidr, other.metadata.name, other.spec.cidr
                ),
            );
        }
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse_documents;

    fn pool(yaml_spec: &str) -> IpPool {
        let text = format!(
            "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n{yaml_spec}"
        );
        match parse_documents(&text, "test").unwrap().remove(0) {
            crate::resources::AnyResource::IpPool(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn errors(yaml_spec: &str) -> ValidationErrors {
        pool(yaml_spec).validate().unwrap_err()
    }

    #[test]
    fn defaults_and_valid_pools() {
        let p = pool("  cidr: 10.65.0.0/16\n");
        p.validate().unwrap();
        assert_eq!(p.spec.block_size(), 26);
        assert_eq!(p.spec.vxlan_mode, EncapMode::Never);
        assert!(p.spec.allows_workloads());
        let p6 = pool("  cidr: fd00:10::/64\n  vxlanMode: Always\n");
        p6.validate().unwrap();
        assert_eq!(p6.spec.block_size(), 122);
        pool("  cidr: 10.0.0.7/32\n  blockSize: 32\n")
            .validate()
            .unwrap();
        pool("  cidr: 10.0.0.0/24\n  ipipMode: CrossSubnet\n  natOutgoing: true\n")
            .validate()
            .unwrap();
    }

    #[test]
    fn host_bits() {
        let e = errors("  cidr: 10.65.0.1/16\n");
        assert!(e.mentions("spec.cidr"), "{e}");
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn block_size_out_of_range() {
        let e = errors("  cidr: 10.0.0.0/8\n  blockSize: 33\n");
        assert!(
            e.mentions("spec.blockSize") && e.to_string().contains("between 20 and 32"),
            "{e}"
        );
        let e = errors("  cidr: 10.0.0.0/8\n  blockSize: 19\n");
        assert!(e.mentions("spec.blockSize"), "{e}");
        let e = errors("  cidr: fd00::/64\n  blockSize: 112\n");
        assert!(
            e.mentions("spec.blockSize") && e.to_string().contains("116 and 128"),
            "{e}"
        );
        let e = errors("  cidr: 10.0.0.0/28\n");
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    #[test]
    fn both_encapsulations() {
        let e = errors("  cidr: 10.0.0.0/16\n  vxlanMode: Always\n  ipipMode: Always\n");
        assert!(
            e.mentions("spec.ipipMode") && e.to_string().contains("cannot both"),
            "{e}"
        );
    }

    #[test]
    fn ipip_on_ipv6() {
        let e = errors("  cidr: fd00::/64\n  ipipMode: Always\n");
        assert!(
            e.mentions("spec.ipipMode") && e.to_string().contains("IPv4 only"),
            "{e}"
        );
    }

    #[test]
    fn bad_selector_and_reserved_ranges() {
        let e = errors("  cidr: 10.0.0.0/16\n  nodeSelector: \"rack == \"\n");
        assert!(e.mentions("spec.nodeSelector"), "{e}");
        let e = errors("  cidr: 127.0.0.0/16\n");
        assert!(
            e.mentions("spec.cidr") && e.to_string().contains("loopback"),
            "{e}"
        );
        let e = errors("  cidr: 10.0.0.0/16\n  allowedUses: []\n");
        assert!(e.mentions("spec.allowedUses"), "{e}");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let err = parse_documents(
            "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: big\n",
            "pool.yaml",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pool.yaml document 1 (IPPool p): spec.blockSize"),
            "{msg}"
        );
        let err = parse_documents(
            "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.0.0.0/16\n  vxlanmode: Always\n",
            "pool.yaml",
        )
        .unwrap_err();
        assert!(err.message.contains("vxlanmode"), "{err}");
        let err = parse_documents(
            "apiVersion: trellis.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.0.0.300/16\n",
            "pool.yaml",
        )
        .unwrap_err();
        assert!(err.message.starts_with("spec.cidr"), "{err}");
    }

    #[test]
    fn overlap_and_immutable_fields() {
        let a = pool("  cidr: 10.0.0.0/16\n");
        let mut b = pool("  cidr: 10.0.128.0/17\n");
        b.metadata.name = "b".into();
        let e = validate_against_existing(&b, std::slice::from_ref(&a)).unwrap_err();
        assert!(
            e.mentions("spec.cidr") && e.to_string().contains("overlaps IPPool p"),
            "{e}"
        );
        b.spec.cidr = "10.1.0.0/16".parse().unwrap();
        validate_against_existing(&b, std::slice::from_ref(&a)).unwrap();
        let mut a2 = a.clone();
        a2.spec.cidr = "10.0.0.0/15".parse().unwrap();
        a2.spec.block_size = Some(28);
        let e = validate_against_existing(&a2, &[a]).unwrap_err();
        assert!(
            e.mentions("spec.cidr") && e.mentions("spec.blockSize"),
            "{e}"
        );
    }

    #[test]
    fn node_selection() {
        let mut p = pool("  cidr: 10.0.0.0/16\n  nodeSelector: \"rack == 'a'\"\n");
        let mut labels = std::collections::BTreeMap::new();
        assert!(!p.spec.selects_node(&labels));
        labels.insert("rack".to_string(), "a".to_string());
        assert!(p.spec.selects_node(&labels));
        p.spec.node_selector = String::new();
        assert!(p.spec.selects_node(&Default::default()));
    }
}
