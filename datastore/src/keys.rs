//! The datastore key layout (relative to the backend prefix, default `/trellis/v1/`).
//!
//! CIDRs appear in keys with `/` replaced by `-` (`10.65.0.0-26`, `fd00::-122`) so a block's
//! key is a single path segment and prefix listings stay unambiguous.

use ipnet::IpNet;

pub const DEFAULT_PREFIX: &str = "/trellis/v1/";

pub const IPPOOLS: &str = "ippools/";
pub const NODES: &str = "nodes/";
pub const IPAM_BLOCKS: &str = "ipam/blocks/";
pub const IPAM_AFFINITY: &str = "ipam/affinity/";
pub const IPAM_HANDLES: &str = "ipam/handles/";
pub const IPAM_CONFIG: &str = "config/ipam";
pub const WORKLOAD_ENDPOINTS: &str = "workloadendpoints/";
pub const POLICIES: &str = "policies/";
pub const GLOBAL_POLICIES: &str = "globalpolicies/";
pub const BGP_PEERS: &str = "bgppeers/";
pub const BGP_CONFIG: &str = "config/bgp";
pub const FELIX_CONFIG: &str = "config/felix/";

/// `10.65.0.0/26` -> `10.65.0.0-26`.
pub fn cidr_segment(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.addr(), cidr.prefix_len())
}

/// Inverse of [`cidr_segment`].
pub fn parse_cidr_segment(seg: &str) -> Option<IpNet> {
    let (addr, len) = seg.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

pub fn block(cidr: &IpNet) -> String {
    format!("{IPAM_BLOCKS}{}", cidr_segment(cidr))
}

pub fn affinity(node: &str, cidr: &IpNet) -> String {
    format!("{IPAM_AFFINITY}{node}/{}", cidr_segment(cidr))
}

pub fn affinities_of(node: &str) -> String {
    format!("{IPAM_AFFINITY}{node}/")
}

pub fn handle(id: &str) -> String {
    format!("{IPAM_HANDLES}{id}")
}

pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}

pub fn ippool(name: &str) -> String {
    format!("{IPPOOLS}{name}")
}

pub fn workload_endpoints_of(node: &str) -> String {
    format!("{WORKLOAD_ENDPOINTS}{node}/")
}

/// `workloadendpoints/NODE/NAMESPACE/POD/ENDPOINT`.
pub fn workload_endpoint(node: &str, namespace: &str, pod: &str, endpoint: &str) -> String {
    format!("{WORKLOAD_ENDPOINTS}{node}/{namespace}/{pod}/{endpoint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_segments_round_trip() {
        for s in ["10.65.0.0/26", "fd00:1::/122", "192.168.7.7/32", "::/0"] {
            let net: IpNet = s.parse().unwrap();
            assert_eq!(parse_cidr_segment(&cidr_segment(&net)), Some(net), "{s}");
            assert!(!cidr_segment(&net).contains('/'));
        }
        assert_eq!(
            block(&"10.65.0.64/26".parse().unwrap()),
            "ipam/blocks/10.65.0.64-26"
        );
        assert_eq!(
            affinity("node-1", &"fd00::/122".parse().unwrap()),
            "ipam/affinity/node-1/fd00::-122"
        );
        assert_eq!(parse_cidr_segment("nonsense"), None);
    }
}
