//! Set element changes over netlink (`policy::elements`) against the kernel, in a namespace of
//! the test's own: the policy engine's element-only transactions sent as netlink batches must
//! leave the same sets as `nft -f` of the same text; a batch the kernel refuses changes
//! nothing and names the set. Needs root.

use trellis_test_support::netns as netns_support;

use std::collections::BTreeMap;

use netns_support::{cleanup_stale, ip, is_root, must_in_ns};
use trellis_agent::policy::elements::ElementWriter;
use trellis_datastore::resources::{parse_documents, AnyResource};
use trellis_policy::render::ElementOp;
use trellis_policy::{Endpoint, EndpointKey, Engine, Source};

const PREFIX: &str = "trl-elem";

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        ip(&format!("netns add {name}"));
        Ns(name)
    }

    fn nft(&self, text: &str) {
        let file = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&file, text).unwrap();
        must_in_ns(&self.0, &["nft", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(file);
    }

    fn set(&self, name: &str) -> Vec<String> {
        let kind = if name.ends_with("-dispatch") {
            "map"
        } else {
            "set"
        };
        let out = must_in_ns(
            &self.0,
            &["nft", "-j", "list", kind, "inet", "trellis", name],
        );
        // The elements in JSON, sorted: order is the kernel's business.
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut elems: Vec<String> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get(kind))
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .map(|e| e.to_string())
            .collect();
        elems.sort();
        elems
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

const POLICIES: &str = "
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {role: server}}
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]
    ports: [{port: web}]
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: egress, namespace: x}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {}}]}]
";

fn pod(n: u32, role: &str) -> Endpoint {
    Endpoint {
        key: EndpointKey::new("x", format!("p{n}")),
        labels: BTreeMap::from([("role".to_string(), role.to_string())]),
        ips: vec![
            format!("10.0.0.{n}").parse().unwrap(),
            format!("fd00::{n}").parse().unwrap(),
        ],
        iface: format!("trlp{n}"),
        node: if n.is_multiple_of(2) {
            "node-1"
        } else {
            "node-2"
        }
        .into(),
        ports: vec![trellis_policy::NamedPort {
            name: "web".into(),
            proto: trellis_policy::Proto::Tcp,
            port: 8000 + n as u16,
        }],
    }
}

#[test]
fn element_batches_do_what_nft_does_and_a_refused_one_changes_nothing() {
    assert!(
        is_root(),
        "creates network namespaces: run as root (CI does)"
    );
    cleanup_stale(PREFIX);
    let (by_netlink, by_nft) = (Ns::new("nl"), Ns::new("nft"));
    let mut engine = Engine::new("node-1");
    for r in parse_documents(POLICIES, "p.yaml").unwrap() {
        let AnyResource::NetworkPolicy(np) = r else {
            panic!()
        };
        let s = Source::Network(Box::new(np));
        engine.set_policy(s.id(), Some(s));
    }
    for n in 1..=6 {
        engine.set_endpoint(pod(n, "client").key, Some(pod(n, "client")));
    }
    let tx = engine.transaction().unwrap();
    by_netlink.nft(&tx.text);
    by_nft.nft(&tx.text);
    engine.committed(tx);
    let mut writer = ElementWriter::open(Some(&by_netlink.0)).unwrap();
    // Relabels back and forth, a pod gone, a pod come: elements only, every kind of set and
    // map (ifname, addresses of both families, ifname . address, address . proto . port,
    // ifname : verdict), except when a pod's combination of policies is new (a dispatch
    // chain to make): that goes through nft on both sides.
    let mut sent = 0;
    let mut structural = 0;
    let mut map_ops = 0;
    let steps = [
        (2, "server"),
        (3, "server"),
        (2, "client"),
        (3, "client"),
        (2, "server"),
        (3, "server"),
        (5, ""),
        (8, "client"),
    ];
    for (n, role) in steps {
        let e = (!role.is_empty()).then(|| pod(n, role));
        engine.set_endpoint(pod(n, "client").key, e);
        let tx = engine.transaction().unwrap();
        match tx.elements.clone() {
            Some(ops) => {
                writer
                    .apply(&ops)
                    .unwrap_or_else(|e| panic!("{e}\n{}", tx.text));
                sent += ops.len();
                map_ops += ops.iter().filter(|o| o.ty.contains(" : ")).count();
            }
            None => {
                by_netlink.nft(&tx.text);
                structural += 1;
            }
        }
        by_nft.nft(&tx.text);
        engine.committed(tx);
    }
    assert!(
        structural <= 2,
        "{structural} transactions made dispatch chains"
    );
    assert!(map_ops > 0, "no verdict map element went over netlink");
    assert!(sent > 10, "{sent} element operations");
    let listing = must_in_ns(&by_nft.0, &["nft", "list", "table", "inet", "trellis"]);
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("set ").or_else(|| l.strip_prefix("map "))
        })
        .map(|l| l.trim_end_matches(" {"))
        .collect();
    assert!(names.len() >= 10, "{listing}");
    for name in &names {
        assert_eq!(by_netlink.set(name), by_nft.set(name), "set {name}");
    }
    // A batch with a good addition and a deletion of something absent: refused whole.
    let selected = names.iter().find(|n| n.ends_with("-in-selected")).unwrap();
    let before = by_netlink.set(selected);
    let err = writer
        .apply(&[
            ElementOp {
                delete: false,
                set: selected.to_string(),
                ty: "ifname".into(),
                elements: vec!["\"trlnew\"".into()],
            },
            ElementOp {
                delete: true,
                set: selected.to_string(),
                ty: "ifname".into(),
                elements: vec!["\"trlabsent\"".into()],
            },
        ])
        .unwrap_err();
    assert!(
        err.contains(&format!("delete element in set {selected}")),
        "{err}"
    );
    assert_eq!(by_netlink.set(selected), before, "nothing changed");
}
