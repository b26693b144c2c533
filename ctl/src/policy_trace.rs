//! `trellisctl policy trace --from NS/POD --to NS/POD|IP --port N/PROTO`: the verdict on a
//! connection and the policies and rules that decide it, computed by the same compiler and IR
//! the agents program the kernel from.

use std::net::IpAddr;

use anyhow::{bail, Context};
use trellis_datastore::codec;
use trellis_datastore::resources::{
    GlobalNetworkPolicySpec, NamespaceSpec, NetworkPolicySpec, NodeSpec, WorkloadEndpointSpec,
};
use trellis_datastore::Datastore;
use trellis_policy::{trace, Decision, EndpointKey, Model, Packet, Proto};

/// `80/TCP`, `53/udp`, `sctp/80`... or a bare protocol (`icmp`).
pub fn parse_port(text: &str) -> anyhow::Result<(Proto, u16)> {
    let proto = |p: &str| match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Ok(Proto::Sctp),
        "icmp" => Ok(Proto::Icmp),
        "icmpv6" => Ok(Proto::IcmpV6),
        other => bail!("{other:?} is not a protocol: use TCP, UDP, SCTP, ICMP or ICMPv6"),
    };
    let (a, b) = match text.split_once('/') {
        Some(pair) => pair,
        None => return Ok((proto(text).context(format!("--port {text:?}"))?, 0)),
    };
    let (num, name) = if a.chars().all(|c| c.is_ascii_digit()) {
        (a, b)
    } else {
        (b, a)
    };
    let port: u16 = num
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("--port {text:?}: {num:?} is not a port (1-65535)"))?;
    Ok((proto(name).context(format!("--port {text:?}"))?, port))
}

/// Everything policy is computed from, read once from the datastore.
pub async fn load(
    ds: &dyn Datastore,
) -> anyhow::Result<(Model, Vec<trellis_policy::CompiledPolicy>, Vec<String>)> {
    let namespaces = codec::list_objects::<NamespaceSpec>(ds).await?;
    let nodes = codec::list_objects::<NodeSpec>(ds).await?;
    let weps = codec::list_objects::<WorkloadEndpointSpec>(ds).await?;
    let model = trellis_policy::resources::model(
        namespaces.iter().map(|v| &v.value),
        nodes.iter().map(|v| &v.value),
        weps.iter().map(|v| &v.value),
    );
    let nps = codec::list_objects::<NetworkPolicySpec>(ds).await?;
    let gnps = codec::list_objects::<GlobalNetworkPolicySpec>(ds).await?;
    let (policies, problems) = trellis_policy::resources::compile_all(
        &model,
        nps.iter().map(|v| &v.value),
        gnps.iter().map(|v| &v.value),
    );
    Ok((model, policies, problems))
}

/// The trace as text.
pub fn run_trace(
    model: &Model,
    policies: &[trellis_policy::CompiledPolicy],
    from: &str,
    to: &str,
    port: (Proto, u16),
) -> anyhow::Result<String> {
    let key = |s: &str| -> anyhow::Result<EndpointKey> {
        let (ns, pod) = s
            .split_once('/')
            .with_context(|| format!("{s:?} is not NAMESPACE/POD"))?;
        let k = EndpointKey::new(ns, pod);
        if !model.endpoints.contains_key(&k) {
            bail!("pod {s} has no workload endpoint in the datastore");
        }
        Ok(k)
    };
    let src_ep = &model.endpoints[&key(from)?];
    let dst_ip: IpAddr = match to.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let e = &model.endpoints[&key(to)?];
            *e.ips
                .iter()
                .find(|ip| src_ep.ips.iter().any(|s| s.is_ipv4() == ip.is_ipv4()))
                .with_context(|| format!("{to} has no address of a family {from} has"))?
        }
    };
    let src_ip = *src_ep
        .ips
        .iter()
        .find(|ip| ip.is_ipv4() == dst_ip.is_ipv4())
        .with_context(|| format!("{from} has no address of {dst_ip}'s family"))?;
    let pkt = Packet {
        src: src_ip,
        dst: dst_ip,
        proto: port.0,
        port: port.1,
    };
    let t = trace(policies, model, &pkt);
    let target = match model.endpoint_of(dst_ip) {
        Some(e) => format!("{} ({dst_ip})", e.key),
        None => dst_ip.to_string(),
    };
    let what = if port.1 == 0 {
        port.0.to_string()
    } else {
        format!("{}/{}", port.0, port.1)
    };
    let mut out = format!(
        "from {} ({src_ip}) to {target} {what}: {}\n",
        src_ep.key,
        if t.allowed() { "ALLOWED" } else { "DENIED" }
    );
    let line = |dir: &str, who: String, d: &Option<Decision>| match d {
        Some(d) => format!("  {dir:<7} of {who}: {d}\n"),
        None => format!("  {dir:<7}: not a pod here, no policy\n"),
    };
    out.push_str(&line("egress", src_ep.key.to_string(), &t.egress));
    let dst_name = model
        .endpoint_of(dst_ip)
        .map_or_else(|| dst_ip.to_string(), |e| e.key.to_string());
    out.push_str(&line("ingress", dst_name, &t.ingress));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_either_order_and_bad_ones_named() {
        assert_eq!(parse_port("80/TCP").unwrap(), (Proto::Tcp, 80));
        assert_eq!(parse_port("udp/53").unwrap(), (Proto::Udp, 53));
        assert_eq!(parse_port("icmp").unwrap(), (Proto::Icmp, 0));
        assert!(parse_port("80/xyz")
            .unwrap_err()
            .to_string()
            .contains("xyz"));
        assert!(format!("{:#}", parse_port("0/tcp").unwrap_err()).contains("not a port"));
    }
}
