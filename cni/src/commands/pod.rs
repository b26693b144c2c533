//! Who a CNI request is about, and how wiring failures map to CNI errors.

use trellis_agent_api::{Attachment, PodRef};

use crate::spec::{CniError, ErrorCode, Invocation};
use crate::wiring::{host_veth_name, WiringError, DEFAULT_HOST_VETH_PREFIX};

/// The attachment of an ADD/DEL/CHECK (always present for those commands).
pub fn attachment(inv: &Invocation) -> Result<Attachment, CniError> {
    let a = inv.env.attachment.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_CONTAINERID and CNI_IFNAME are required",
        )
    })?;
    Ok(Attachment {
        container_id: a.container_id.clone(),
        ifname: a.ifname.clone(),
    })
}

/// The pod: from Kubernetes' CNI_ARGS when given; otherwise (e.g. `ctr run --cni`) the
/// container itself, named after its ID in the `default` namespace.
pub fn pod(inv: &Invocation, attachment: &Attachment) -> PodRef {
    let args = &inv.env.args;
    match args.pod() {
        Some((ns, name)) => PodRef {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: args.pod_uid.clone().unwrap_or_default(),
        },
        None => PodRef {
            namespace: "default".into(),
            name: dns_label(&attachment.container_id),
            uid: String::new(),
        },
    }
}

/// `s` as a DNS label: lower case, other characters as '-', at most 63, trimmed of '-'.
fn dns_label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "container".into()
    } else {
        trimmed.to_string()
    }
}

/// The pod's host-side veth name (stable per pod).
pub fn host_ifname(pod: &PodRef) -> Result<String, CniError> {
    host_veth_name(DEFAULT_HOST_VETH_PREFIX, &pod.namespace, &pod.name).map_err(wiring_error)
}

/// A wiring failure as a CNI error.
pub fn wiring_error(e: WiringError) -> CniError {
    let code = match &e {
        WiringError::InvalidSpec { .. } => ErrorCode::InvalidNetworkConfig,
        WiringError::OpenNetns { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ErrorCode::UnknownContainer
        }
        _ => ErrorCode::IoFailure,
    };
    CniError::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn container_ids_become_dns_labels() {
        assert_eq!(super::dns_label("default-MyBox_1"), "default-mybox-1");
        assert_eq!(super::dns_label("--"), "container");
        assert_eq!(super::dns_label(&"a".repeat(100)).len(), 63);
    }
}
