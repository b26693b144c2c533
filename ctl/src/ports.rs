//! `trellisctl ports pod NS/POD NAME=PORT[/PROTO]...`: replaces the named container ports of a
//! pod's workload endpoints, which NetworkPolicy named ports (`port: serve-80-tcp`) resolve
//! against per destination pod. The orchestrator's job on a real cluster (the pod spec's
//! `containers[].ports`), done by hand or by the lab here. Every endpoint of the pod gets the
//! same list, each written with compare-and-swap; no items clears the list.

use anyhow::bail;
use trellis_datastore::resources::workload_endpoint::{EndpointPort, PortProtocol};
use trellis_datastore::Datastore;

use crate::pod_endpoints::update_pod_endpoints;

/// One item: `serve-80-tcp=80/TCP`; the protocol is TCP when left out, as in a pod spec.
pub fn parse_port(text: &str) -> anyhow::Result<EndpointPort> {
    let Some((name, rest)) = text.split_once('=') else {
        bail!("{text:?} is not NAME=PORT[/PROTOCOL]");
    };
    if name.is_empty() {
        bail!("{text:?}: the port name is empty");
    }
    let (number, proto) = rest.split_once('/').unwrap_or((rest, "TCP"));
    let protocol = match proto.to_ascii_uppercase().as_str() {
        "TCP" => PortProtocol::Tcp,
        "UDP" => PortProtocol::Udp,
        "SCTP" => PortProtocol::Sctp,
        _ => bail!("{text:?}: protocol {proto:?} is not TCP, UDP or SCTP"),
    };
    let port = match number.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => bail!("{text:?}: port {number:?} is not a number from 1 to 65535"),
    };
    Ok(EndpointPort {
        name: name.to_string(),
        protocol,
        port,
        host_port: None,
        host_ip: None,
    })
}

/// Parses every item; a name used twice for one protocol is an error (Kubernetes requires port
/// names unique within a pod).
pub fn parse_ports(items: &[String]) -> anyhow::Result<Vec<EndpointPort>> {
    let mut ports: Vec<EndpointPort> = Vec::with_capacity(items.len());
    for item in items {
        let p = parse_port(item)?;
        if ports.iter().any(|q| q.name == p.name) {
            bail!("{item:?}: port name {:?} is given twice", p.name);
        }
        ports.push(p);
    }
    Ok(ports)
}

/// Replaces the ports of every endpoint of pod `ns/pod` with `ports` (`items` are their texts,
/// for errors); returns how many endpoints were updated.
pub async fn set_pod_ports(
    ds: &dyn Datastore,
    ns: &str,
    pod: &str,
    items: &[String],
    ports: &[EndpointPort],
) -> anyhow::Result<usize> {
    update_pod_endpoints(ds, ns, pod, "ports", |w| {
        // Item by item first, so an error names the item, not only its index.
        for (i, item) in items.iter().enumerate().take(ports.len()) {
            let mut one = w.clone();
            one.spec.ports = ports[..=i].to_vec();
            one.validate()
                .map_err(|e| anyhow::anyhow!("ports of {ns}/{pod}: {item:?}: {e}"))?;
        }
        w.spec.ports = ports.to_vec();
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_endpoints::tests::put_wep;
    use trellis_datastore::codec;
    use trellis_datastore::memory::MemoryDatastore;
    use trellis_datastore::resources::WorkloadEndpointSpec;

    async fn ports_of(ds: &MemoryDatastore, pod: &str) -> Vec<Vec<String>> {
        codec::list_objects::<WorkloadEndpointSpec>(ds)
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.value.spec.pod == pod)
            .map(|w| {
                w.value
                    .spec
                    .ports
                    .iter()
                    .map(|p| format!("{}={}/{:?}", p.name, p.port, p.protocol))
                    .collect()
            })
            .collect()
    }

    fn items(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn every_endpoint_of_the_pod_gets_the_list_and_only_those() {
        let ds = MemoryDatastore::new();
        put_wep(&ds, "a", "eth0", "10.0.0.1").await;
        put_wep(&ds, "a", "net1", "10.1.0.1").await;
        put_wep(&ds, "b", "eth0", "10.0.0.2").await;
        let set = items(&["serve-80-tcp=80/TCP", "serve-81-udp=81/udp", "web=8080"]);
        let ports = parse_ports(&set).unwrap();
        assert_eq!(set_pod_ports(&ds, "x", "a", &set, &ports).await.unwrap(), 2);
        let want = vec!["serve-80-tcp=80/Tcp", "serve-81-udp=81/Udp", "web=8080/Tcp"];
        assert_eq!(ports_of(&ds, "a").await, [want.clone(), want]);
        assert_eq!(ports_of(&ds, "b").await, [Vec::<String>::new()]);
        // The list is replaced, not merged; no items clears it.
        let one = items(&["dns=53/UDP"]);
        set_pod_ports(&ds, "x", "a", &one, &parse_ports(&one).unwrap())
            .await
            .unwrap();
        assert_eq!(ports_of(&ds, "a").await, [["dns=53/Udp"], ["dns=53/Udp"]]);
        set_pod_ports(&ds, "x", "a", &[], &[]).await.unwrap();
        assert_eq!(ports_of(&ds, "a").await, vec![Vec::<String>::new(); 2]);
        let e = set_pod_ports(&ds, "x", "nope", &one, &parse_ports(&one).unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("x/nope"), "{e}");
    }

    #[tokio::test]
    async fn a_name_the_datastore_rejects_is_named_and_nothing_is_written() {
        let ds = MemoryDatastore::new();
        put_wep(&ds, "a", "eth0", "10.0.0.1").await;
        let bad = items(&["ok=80", "Not_A_Name=81/TCP"]);
        let e = set_pod_ports(&ds, "x", "a", &bad, &parse_ports(&bad).unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Not_A_Name=81/TCP\"") && e.contains("spec.ports[1].name"),
            "{e}"
        );
        assert_eq!(ports_of(&ds, "a").await, [Vec::<String>::new()]);
    }

    #[test]
    fn items_parse_and_bad_ones_are_named() {
        let p = parse_port("serve-81-sctp=81/SCTP").unwrap();
        assert_eq!(
            (p.name.as_str(), p.port, p.protocol),
            ("serve-81-sctp", 81, PortProtocol::Sctp)
        );
        assert_eq!(parse_port("web=8080").unwrap().protocol, PortProtocol::Tcp);
        for (bad, why) in [
            ("web", "NAME=PORT"),
            ("=80", "name is empty"),
            ("web=0", "1 to 65535"),
            ("web=70000", "1 to 65535"),
            ("web=http", "1 to 65535"),
            ("web=80/ICMP", "not TCP, UDP or SCTP"),
        ] {
            let e = parse_port(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(why),
                "{bad}: {e}"
            );
        }
        let e = parse_ports(&items(&["web=80", "web=81/UDP"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"web=81/UDP\"") && e.contains("twice"), "{e}");
    }
}
