//! Interface names: the host veth's name derived from the pod, and the kernel's name rules.

use sha1::{Digest, Sha1};

use super::error::WiringError;

/// Linux interface names hold at most 15 bytes (IFNAMSIZ 16 minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// The default host veth prefix. `trellis` + 8 hex digits = 15 bytes, the most IFNAMSIZ allows.
/// (Calico uses `cali` + 11 hex digits; pass `"cali"` to get Calico's names.)
pub const DEFAULT_HOST_VETH_PREFIX: &str = "trellis";

/// Fewest hex digits of the hash a name may keep: with 4 (16 bits) two pods on one node already
/// collide with a probability of ~1/65536 per pair, so longer prefixes are refused.
const MIN_HASH_DIGITS: usize = 4;

/// The host-side veth name of a pod: `prefix` followed by as many leading hex digits of
/// sha1("NAMESPACE.POD") as fit in 15 bytes. Stable per pod, so DEL and CHECK find it again and
/// an ADD retried after a crash replaces its own leftover.
///
/// Errors if `prefix` is not a valid start of an interface name or leaves fewer than 4 digits.
pub fn host_veth_name(prefix: &str, namespace: &str, pod: &str) -> Result<String, WiringError> {
    let digits = MAX_IFNAME_LEN.saturating_sub(prefix.len());
    if digits < MIN_HASH_DIGITS {
        return Err(WiringError::InvalidSpec {
            field: "host veth prefix",
            value: prefix.to_owned(),
            reason: format!(
                "longer than {} bytes: fewer than {MIN_HASH_DIGITS} hex digits of the pod hash \
                 would fit in an interface name",
                MAX_IFNAME_LEN - MIN_HASH_DIGITS
            ),
        });
    }
    if let Some(reason) = prefix.chars().find_map(bad_char) {
        return Err(WiringError::InvalidSpec {
            field: "host veth prefix",
            value: prefix.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let mut name = String::with_capacity(MAX_IFNAME_LEN);
    name.push_str(prefix);
    for byte in digest.iter() {
        name.push_str(&format!("{byte:02x}"));
    }
    name.truncate(MAX_IFNAME_LEN);
    Ok(name)
}

/// Checks an interface name against the kernel's rules (`dev_valid_name`).
pub(crate) fn validate_ifname(field: &'static str, name: &str) -> Result<(), WiringError> {
    let invalid = |reason: &str| WiringError::InvalidSpec {
        field,
        value: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid("longer than 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(invalid("not a usable interface name"));
    }
    match name.chars().find_map(bad_char) {
        Some(reason) => Err(invalid(reason)),
        None => Ok(()),
    }
}

fn bad_char(c: char) -> Option<&'static str> {
    match c {
        '/' => Some("contains '/'"),
        ':' => Some("contains ':'"),
        '\0' => Some("contains NUL"),
        c if c.is_whitespace() => Some("contains whitespace"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_keeps_eight_hex_digits() {
        // printf 'default.nginx' | sha1sum -> c440f455693b69cdd48a37aa5ecd78038f50413d
        let name = host_veth_name(DEFAULT_HOST_VETH_PREFIX, "default", "nginx").unwrap();
        assert_eq!(name, "trellisc440f455");
        assert_eq!(name.len(), MAX_IFNAME_LEN);
    }

    #[test]
    fn calico_prefix_gives_calicos_names() {
        // Calico: "cali" + sha1("NAMESPACE.POD")[:11]
        let name = host_veth_name("cali", "default", "nginx").unwrap();
        assert_eq!(name, "calic440f455693");
        let name = host_veth_name("cali", "kube-system", "coredns-5d78c9869d-abcde").unwrap();
        assert_eq!(name, "cali4d5f75c480c");
    }

    #[test]
    fn names_differ_per_pod_and_are_valid() {
        let a = host_veth_name("trellis", "ns", "a").unwrap();
        let b = host_veth_name("trellis", "ns", "b").unwrap();
        assert_ne!(a, b);
        validate_ifname("host_ifname", &a).unwrap();
    }

    #[test]
    fn long_or_odd_prefixes_are_refused() {
        assert!(host_veth_name("abcdefghijkl", "ns", "p").is_err());
        assert!(host_veth_name("abcdefghijk", "ns", "p").is_ok());
        assert!(host_veth_name("tr:", "ns", "p").is_err());
        assert!(host_veth_name("t r", "ns", "p").is_err());
    }

    #[test]
    fn ifname_rules() {
        validate_ifname("ifname", "eth0").unwrap();
        validate_ifname("ifname", "abcdefghijklmno").unwrap();
        for bad in ["", "abcdefghijklmnop", ".", "..", "eth/0", "eth:0", "eth 0"] {
            assert!(validate_ifname("ifname", bad).is_err(), "{bad:?} accepted");
        }
    }
}
