//! The Kubernetes e2e cluster both truth-table suites run on: namespaces x, y, z (label `ns`),
//! pods a, b, c in each (label `pod`), a on node-1, b on node-2, c on node-3, each with an IPv4
//! address 10.0.N.P and an IPv6 one fd00::N:P, named ports `web` (TCP 80, 81 on x/b) and `dns`
//! (UDP 81); node-1's own address is 192.168.0.1. Tables have a row per source and a column per
//! destination, in the order x/a x/b x/c y/a ... z/c; `1` allowed, `0` denied.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::{
    compile_global_policy, compile_network_policy, trace_detailed, CompiledPolicy, Endpoint,
    EndpointKey, Model, NamedPort, Packet, PacketDetail, Proto,
};

pub const NS: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

pub fn ip_of(ns: usize, pod: usize, v6: bool) -> IpAddr {
    let text = if v6 {
        format!("fd00::{}:{}", ns + 1, pod + 1)
    } else {
        format!("10.0.{}.{}", ns + 1, pod + 1)
    };
    text.parse().unwrap()
}

pub fn cluster() -> Model {
    let mut m = Model::default();
    for (i, ns) in NS.iter().enumerate() {
        m.set_namespace(ns, &BTreeMap::from([("ns".to_string(), ns.to_string())]));
        for (j, pod) in PODS.iter().enumerate() {
            m.add_endpoint(Endpoint {
                key: EndpointKey::new(*ns, *pod),
                labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
                ips: vec![ip_of(i, j, false), ip_of(i, j, true)],
                iface: format!("trl{ns}{pod}"),
                node: format!("node-{}", j + 1),
                // Named port "web": 80 everywhere but on x/b, where it is 81.
                ports: vec![
                    NamedPort {
                        name: "web".into(),
                        proto: Proto::Tcp,
                        port: if (*ns, *pod) == ("x", "b") { 81 } else { 80 },
                    },
                    NamedPort {
                        name: "dns".into(),
                        proto: Proto::Udp,
                        port: 81,
                    },
                ],
            });
        }
    }
    m.hosts
        .insert("node-1".into(), vec!["192.168.0.1".parse().unwrap()]);
    m
}

/// NetworkPolicies and GlobalNetworkPolicies, validated, then compiled.
pub fn compile(yaml: &str, model: &Model) -> Vec<CompiledPolicy> {
    parse_documents(yaml, "test.yaml")
        .unwrap()
        .into_iter()
        .map(|r| match r {
            AnyResource::NetworkPolicy(np) => {
                np.validate().unwrap();
                compile_network_policy(&np, model).unwrap()
            }
            AnyResource::GlobalNetworkPolicy(gnp) => {
                gnp.validate().unwrap();
                compile_global_policy(&gnp, model).unwrap()
            }
            other => panic!("not a policy: {}", other.kind()),
        })
        .collect()
}

/// What the table sends: protocol, destination port, family and the rest.
#[derive(Clone, Copy)]
pub struct Probe {
    pub proto: Proto,
    pub port: u16,
    pub v6: bool,
    pub detail: PacketDetail,
}

pub const TCP_80: Probe = Probe {
    proto: Proto::Tcp,
    port: 80,
    v6: false,
    detail: PacketDetail {
        sport: None,
        icmp: None,
    },
};

pub fn probe(proto: Proto, port: u16) -> Probe {
    Probe {
        proto,
        port,
        ..TCP_80
    }
}

pub fn table(policies: &[CompiledPolicy], model: &Model, p: Probe) -> String {
    let mut out = String::new();
    for i in 0..9 {
        for j in 0..9 {
            let pkt = Packet {
                src: ip_of(i / 3, i % 3, p.v6),
                dst: ip_of(j / 3, j % 3, p.v6),
                proto: p.proto,
                port: p.port,
            };
            let allowed = trace_detailed(policies, model, &pkt, &p.detail).allowed();
            out.push(if allowed { '1' } else { '0' });
            if j % 3 == 2 && j != 8 {
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
}

pub fn assert_table(policies: &str, p: Probe, expected: &str) {
    let model = cluster();
    let compiled = compile(policies, &model);
    let got = table(&compiled, &model, p);
    let norm = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().collect::<String>())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(
        norm(&got),
        norm(expected),
        "{}/{} v6={} {:?}: got (rows from, columns to: xa xb xc  ya yb yc  za zb zc)\n{got}",
        p.proto,
        p.port,
        p.v6,
        p.detail
    );
}

pub fn gnp(name: &str, spec: &str) -> String {
    format!(
        "---\nkind: GlobalNetworkPolicy\napiVersion: trellis.dev/v1\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

pub fn np(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}
