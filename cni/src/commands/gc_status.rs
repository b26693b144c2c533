//! GC (release every attachment the runtime no longer knows) and STATUS (can ADD work now?).

use trellis_agent_api::{Attachment, GcRequest};

use super::{agent, agent_error, delegate};
use crate::spec::{CniError, ErrorCode, Invocation, Ipam};

pub fn gc(inv: &Invocation, stdin: &str) -> Result<(), CniError> {
    let valid = inv
        .conf
        .valid_attachments
        .as_ref()
        .map(|v| {
            v.iter()
                .map(|a| Attachment {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    agent(inv)?.gc(&GcRequest { valid }).map_err(agent_error)?;
    if let Some(Ipam::Delegated(d)) = &inv.conf.ipam {
        // CNI 1.1: a plugin passes GC on to its delegate.
        delegate::exec(inv, &d.plugin_type, "GC", stdin)?;
    }
    Ok(())
}

/// Ready when the agent answers and says an enabled pool selects this node; otherwise code 50.
pub fn status(inv: &Invocation) -> Result<(), CniError> {
    let st = agent(inv)?
        .status()
        .map_err(|e| CniError::new(ErrorCode::PluginNotAvailable, agent_error(e).msg))?;
    if st.ready {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::PluginNotAvailable,
            format!("trellis-agent on {} is not ready: {}", st.node, st.reason),
        ))
    }
}
