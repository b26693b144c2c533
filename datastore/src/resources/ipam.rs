//! Stored IPAM state (Calico's model): blocks carved from pools, the node affinity of each block,
//! handles that own addresses, and cluster-wide IPAM settings. The allocation logic lives in the
//! `trellis-ipam` crate; these are the persisted shapes.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::ValidationErrors;

pub type IpamBlock = Object<IpamBlockSpec>;
pub type BlockAffinity = Object<BlockAffinitySpec>;
pub type IpamHandle = Object<IpamHandleSpec>;
pub type IpamConfig = Object<IpamConfigSpec>;

/// Prefix of a block's `affinity` naming a node (Calico writes `host:NODE`).
pub const HOST_AFFINITY_PREFIX: &str = "host:";

/// What an address is used for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AllocationKind {
    #[default]
    Pod,
    VxlanTunnel,
    IpipTunnel,
    /// Assigned by an operator (`trellisctl`), owned by nothing else.
    Reserved,
}

/// Who an allocation belongs to, for `ipam show` and for leak detection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationAttributes {
    #[serde(default, rename = "type")]
    pub kind: AllocationKind,
    /// Node the allocation was made for (not always the block's affine node: borrowing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Unix seconds; lets GC give a fresh allocation time to get its workload endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_at: Option<u64>,
}

/// One allocated address of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub handle: String,
    #[serde(default)]
    pub attributes: AllocationAttributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamBlockSpec {
    pub cidr: IpNet,
    /// `host:NODE` for a block claimed by a node; `None` for a block whose node went away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Allocated addresses by ordinal (offset from the block's first address).
    #[serde(default)]
    pub allocations: BTreeMap<u32, Allocation>,
    /// Free ordinals in the order they will be handed out: a released address goes to the back,
    /// so a just-freed IP is reused last (conntrack and ARP caches forget it first).
    #[serde(default)]
    pub unallocated: Vec<u32>,
}

impl IpamBlockSpec {
    /// Node named by the affinity, if any.
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
    }

    pub fn size(&self) -> u64 {
        1u64 << (self.cidr.max_prefix_len() - self.cidr.prefix_len())
    }
}

impl Spec for IpamBlockSpec {
    const KIND: &'static str = "IPAMBlock";
    const KEY_PREFIX: &'static str = keys::IPAM_BLOCKS;

    fn validate(&self, _meta: &ObjectMeta, _errs: &mut ValidationErrors) {}

    fn key(&self, _meta: &ObjectMeta) -> String {
        keys::block(&self.cidr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    pub node: String,
    pub cidr: IpNet,
}

impl Spec for BlockAffinitySpec {
    const KIND: &'static str = "BlockAffinity";
    const KEY_PREFIX: &'static str = keys::IPAM_AFFINITY;

    fn validate(&self, _meta: &ObjectMeta, _errs: &mut ValidationErrors) {}

    fn key(&self, _meta: &ObjectMeta) -> String {
        keys::affinity(&self.node, &self.cidr)
    }
}

/// The addresses one owner (a pod interface: `CONTAINERID.IFNAME`) holds, counted per block, so
/// release by handle touches only those blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamHandleSpec {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block key segment (`10.65.0.0-26`) -> number of addresses held in it.
    #[serde(default)]
    pub blocks: BTreeMap<String, u32>,
}

impl Spec for IpamHandleSpec {
    const KIND: &'static str = "IPAMHandle";
    const KEY_PREFIX: &'static str = keys::IPAM_HANDLES;

    fn validate(&self, _meta: &ObjectMeta, _errs: &mut ValidationErrors) {}

    fn key(&self, _meta: &ObjectMeta) -> String {
        keys::handle(&self.handle_id)
    }
}

/// Cluster-wide IPAM settings; one object named `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfigSpec {
    /// Never hand out addresses from another node's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// How many blocks one node may hold per address family; 0 = unlimited.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Whether nodes claim blocks on demand.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
}

fn default_true() -> bool {
    true
}

impl Default for IpamConfigSpec {
    fn default() -> Self {
        Self {
            strict_affinity: false,
            max_blocks_per_host: 0,
            auto_allocate_blocks: true,
        }
    }
}

impl Spec for IpamConfigSpec {
    const KIND: &'static str = "IPAMConfig";
    const KEY_PREFIX: &'static str = keys::IPAM_CONFIG;

    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors) {
        if meta.name != "default" {
            errs.add(
                "metadata.name",
                format!(
                    "IPAMConfig is a singleton named \"default\", got {:?}",
                    meta.name
                ),
            );
        }
    }

    fn key(&self, _meta: &ObjectMeta) -> String {
        keys::IPAM_CONFIG.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{parse_documents, AnyResource};

    #[test]
    fn ipam_config_is_a_singleton_with_defaults() {
        let r = parse_documents("apiVersion: trellis.dev/v1\nkind: IPAMConfig\nmetadata: {name: default}\nspec:\n  strictAffinity: true\n", "t")
            .unwrap()
            .remove(0);
        let AnyResource::IpamConfig(c) = &r else {
            panic!("{r:?}")
        };
        assert!(
            c.spec.strict_affinity
                && c.spec.auto_allocate_blocks
                && c.spec.max_blocks_per_host == 0
        );
        assert_eq!(r.key(), "config/ipam");
        r.validate().unwrap();
        let r = parse_documents(
            "apiVersion: trellis.dev/v1\nkind: IPAMConfig\nmetadata: {name: other}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        assert!(r.validate().unwrap_err().mentions("metadata.name"));
        let e = parse_documents("apiVersion: trellis.dev/v1\nkind: IPAMConfig\nmetadata: {name: default}\nspec: {maxBlocksPerHost: -1}\n", "t").unwrap_err();
        assert!(e.message.starts_with("spec.maxBlocksPerHost"), "{e}");
    }

    #[test]
    fn block_helpers() {
        let b = IpamBlockSpec {
            cidr: "10.0.0.64/26".parse().unwrap(),
            affinity: Some("host:node-2".into()),
            allocations: BTreeMap::new(),
            unallocated: (0..64).collect(),
        };
        assert_eq!(b.affine_node(), Some("node-2"));
        assert_eq!(b.size(), 64);
        let obj = IpamBlock::new(ObjectMeta::named("10-0-0-64-26"), b);
        assert_eq!(obj.key(), "ipam/blocks/10.0.0.64-26");
    }
}
