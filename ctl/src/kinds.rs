//! Resolving what users type as a kind (`ippools`, `netpol`, `GlobalNetworkPolicy`...).

use trellis_datastore::resources::AnyResource;

/// Names accepted for each kind besides the kind itself (case-insensitive), plural first.
const ALIASES: &[(&str, &[&str])] = &[
    ("IPPool", &["ippools", "pool", "pools"]),
    ("Node", &["nodes", "no"]),
    ("IPAMConfig", &["ipamconfigs", "ipamconfiguration"]),
    ("IPAMBlock", &["ipamblocks", "block", "blocks"]),
    (
        "BlockAffinity",
        &["blockaffinities", "affinity", "affinities"],
    ),
    ("IPAMHandle", &["ipamhandles", "handle", "handles"]),
    ("WorkloadEndpoint", &["workloadendpoints", "wep", "weps"]),
    ("BGPPeer", &["bgppeers", "peer", "peers"]),
    (
        "BGPConfiguration",
        &["bgpconfigurations", "bgpconfig", "bgpconfigs"],
    ),
    (
        "FelixConfiguration",
        &["felixconfigurations", "felixconfig", "felixconfigs"],
    ),
    (
        "NetworkPolicy",
        &["networkpolicies", "netpol", "policy", "policies"],
    ),
    (
        "GlobalNetworkPolicy",
        &[
            "globalnetworkpolicies",
            "gnp",
            "globalpolicy",
            "globalpolicies",
        ],
    ),
    ("Namespace", &["namespaces", "ns"]),
];

/// The canonical kind for `input`, or an error listing what is accepted.
pub fn resolve(input: &str) -> anyhow::Result<&'static str> {
    for kind in AnyResource::KINDS {
        if kind.eq_ignore_ascii_case(input) {
            return Ok(kind);
        }
    }
    for (kind, aliases) in ALIASES {
        if aliases.iter().any(|a| a.eq_ignore_ascii_case(input)) {
            return Ok(AnyResource::KINDS
                .iter()
                .copied()
                .find(|k| k == kind)
                .expect("alias table names real kinds"));
        }
    }
    anyhow::bail!(
        "unknown resource kind {input:?}; known kinds: {}",
        AnyResource::KINDS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_plurals_and_short_names() {
        assert_eq!(resolve("ippools").unwrap(), "IPPool");
        assert_eq!(resolve("IPPool").unwrap(), "IPPool");
        assert_eq!(resolve("netpol").unwrap(), "NetworkPolicy");
        assert_eq!(resolve("GNP").unwrap(), "GlobalNetworkPolicy");
        assert_eq!(resolve("bgppeer").unwrap(), "BGPPeer");
        assert!(resolve("pods")
            .unwrap_err()
            .to_string()
            .contains("known kinds"));
        for (kind, _) in ALIASES {
            assert!(AnyResource::KINDS.contains(kind), "{kind}");
        }
    }
}
