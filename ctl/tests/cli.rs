//! `trellisctl` as a user runs it, against a real etcd started by the test.

use std::path::PathBuf;
use std::process::{Command, Output};

use trellis_datastore::testing::EtcdServer;
use trellis_datastore::Datastore;

struct Ctl {
    endpoint: String,
    prefix: String,
}

impl Ctl {
    fn new(name: &str) -> Self {
        let server = EtcdServer::shared();
        Self {
            endpoint: server.endpoint(),
            prefix: server.config(name).prefix,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_trellisctl"))
            .args(args)
            .env("TRELLIS_ETCD_ENDPOINTS", &self.endpoint)
            .env("TRELLIS_ETCD_PREFIX", &self.prefix)
            .output()
            .expect("run trellisctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "trellisctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "trellisctl {args:?} should fail, printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one-line reason expected, got {err:?}"
        );
        err
    }

    async fn datastore(&self) -> trellis_datastore::etcd::EtcdDatastore {
        let cfg = trellis_datastore::etcd::EtcdConfig::new(vec![self.endpoint.clone()])
            .with_prefix(self.prefix.clone());
        trellis_datastore::etcd::EtcdDatastore::connect(cfg)
            .await
            .unwrap()
    }
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn apply_get_delete_round_trip() {
    let ctl = Ctl::new("roundtrip");
    let out = ctl.ok(&["apply", "-f", &data("good.yaml")]);
    assert!(
        out.contains("IPPool default-ipv4 created")
            && out.contains("NetworkPolicy prod/allow-web created"),
        "{out}"
    );
    let out = ctl.ok(&["apply", "-f", &data("good.yaml")]);
    assert!(out.contains("IPPool default-ipv4 unchanged"), "{out}");

    let table = ctl.ok(&["get", "ippools"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("default-ipv4")
            && table.contains("10.70.0.0/16")
            && table.contains("fd00:70::/64"),
        "{table}"
    );
    let wide = ctl.ok(&["get", "ippool", "-o", "wide"]);
    assert!(
        wide.contains("SELECTOR") && wide.contains("all()"),
        "{wide}"
    );
    let yaml = ctl.ok(&["get", "ippool", "default-ipv4", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: IPPool")
            && yaml.contains("natOutgoing: true")
            && yaml.contains("creationTimestamp"),
        "{yaml}"
    );
    let json = ctl.ok(&["get", "netpol", "-n", "prod", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["items"][0]["spec"]["ingress"][0]["ports"][0]["port"], 80);
    assert!(
        ctl.ok(&["get", "netpol"]).lines().count() == 1,
        "default namespace has none"
    );
    assert!(ctl.ok(&["get", "netpol", "-A"]).contains("allow-web"));
    assert!(ctl
        .fails(&["get", "ippool", "nope"])
        .contains("IPPool nope not found"));
    assert!(ctl
        .fails(&["get", "pods"])
        .contains("unknown resource kind"));

    ctl.ok(&["delete", "node", "node-1"]);
    assert!(ctl
        .fails(&["delete", "node", "node-1"])
        .contains("not found"));
}

#[tokio::test]
async fn bad_files_change_nothing_and_name_the_problem() {
    let ctl = Ctl::new("bad");
    ctl.ok(&["apply", "-f", &data("good.yaml")]);
    let ds = ctl.datastore().await;
    let before = ds.list("").await.unwrap();
    let cases = [
        (
            "bad-overlap.yaml",
            "spec.cidr: 10.70.128.0/17 overlaps IPPool default-ipv4",
        ),
        (
            "bad-blocksize.yaml",
            "spec.blockSize: must be between 20 and 32",
        ),
        (
            "bad-encap.yaml",
            "spec.ipipMode: vxlanMode and ipipMode cannot both be enabled",
        ),
        ("bad-ipip6.yaml", "spec.ipipMode: IPIP is IPv4 only"),
        (
            "bad-hostbits.yaml",
            "spec.cidr: 10.82.0.1/16 has host bits set",
        ),
        ("bad-policy.yaml", "spec.ingress[0].ports[0].port"),
        ("bad-schema.yaml", "spec.blockSize"),
        ("bad-kind.yaml", "unknown kind \"IPPoool\""),
        ("bad-yaml.yaml", "not valid YAML"),
    ];
    for (file, expect) in cases {
        let err = ctl.fails(&["apply", "-f", &data(file)]);
        assert!(err.contains(expect), "{file}: {err}");
        assert!(
            err.contains(file) && err.contains("document 2"),
            "{file}: the error names the file and document: {err}"
        );
        let after = ds.list("").await.unwrap();
        assert_eq!(before.items, after.items, "{file} changed the datastore");
    }
    // Applying IPAM-owned kinds is refused.
    let err = ctl.fails(&["apply", "-f", "/dev/null"]);
    assert!(err.contains("no resources"), "{err}");
}

#[tokio::test]
async fn ipam_show_check_release_and_gc() {
    let ctl = Ctl::new("ipam");
    ctl.ok(&["apply", "-f", &data("good.yaml")]);
    let ds = std::sync::Arc::new(ctl.datastore().await) as std::sync::Arc<dyn Datastore>;
    let node = trellis_ipam::NodeIpam::new(ds.clone(), "node-1");
    let req = trellis_ipam::AssignRequest {
        handle: "c1.eth0".into(),
        num_v4: 3,
        num_v6: 1,
        ..Default::default()
    };
    let got = node.auto_assign(&req).await.unwrap();

    let show = ctl.ok(&["ipam", "show"]);
    assert!(
        show.contains("default-ipv4") && show.contains("65536") && show.contains("3 (0.0%)"),
        "{show}"
    );
    let blocks = ctl.ok(&["ipam", "show", "--show-blocks"]);
    assert!(
        blocks.contains("node-1")
            && blocks.contains("3/64")
            && blocks.contains("blocks per node: node-1=2"),
        "{blocks}"
    );

    // No workload endpoint was written for c1: check reports 4 leaks and exits 1.
    let out = ctl.run(&["ipam", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("leaked addresses: 4"), "{report}");

    let ip = got.v4[0].to_string();
    assert!(ctl
        .ok(&["ipam", "release", "--ip", &ip])
        .contains(&format!("released {ip}")));
    assert!(ctl
        .fails(&["ipam", "release", "--ip", &ip])
        .contains(&format!("not allocated: {ip}")));
    let gc = ctl.ok(&["ipam", "gc", "--grace-period", "0"]);
    assert!(gc.contains("released 3 leaked addresses"), "{gc}");
    ctl.ok(&["ipam", "check"]);
}

#[tokio::test]
async fn pool_in_use_is_not_deleted_without_force() {
    let ctl = Ctl::new("pooldelete");
    ctl.ok(&["apply", "-f", &data("good.yaml")]);
    let ds = std::sync::Arc::new(ctl.datastore().await) as std::sync::Arc<dyn Datastore>;
    let node = trellis_ipam::NodeIpam::new(ds, "node-1");
    node.auto_assign(&trellis_ipam::AssignRequest {
        handle: "c.eth0".into(),
        num_v4: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = ctl.fails(&["delete", "ippool", "default-ipv4"]);
    assert!(err.contains("still has 1 allocated"), "{err}");
    ctl.ok(&["delete", "ippool", "default-ipv4", "--force"]);
}

#[test]
fn unreachable_etcd_is_a_one_line_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_trellisctl"))
        .args([
            "--etcd-endpoints",
            "http://127.0.0.1:9",
            "--etcd-timeout",
            "1",
            "get",
            "ippools",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("127.0.0.1:9") && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

#[tokio::test]
async fn ipam_assign_auto_and_specific_addresses() {
    let ctl = Ctl::new("assign");
    ctl.ok(&["apply", "-f", &data("good.yaml")]);
    let out = ctl.ok(&[
        "ipam", "assign", "--node", "node-1", "--handle", "c1.eth0", "--ipv4", "2", "--ipv6", "1",
        "--pod", "prod/web",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("10.70.") && out.contains("fd00:70::"), "{out}");
    let out = ctl.ok(&[
        "ipam",
        "assign",
        "--node",
        "node-1",
        "--handle",
        "vip",
        "--ip",
        "10.70.200.7",
    ]);
    assert!(out.contains("assigned 10.70.200.7 to vip"), "{out}");
    // The second address is taken: the first of this command must not stay allocated.
    let err = ctl.fails(&[
        "ipam",
        "assign",
        "--node",
        "node-1",
        "--handle",
        "vip2",
        "--ip",
        "10.70.200.8",
        "--ip",
        "10.70.200.7",
    ]);
    assert!(
        err.contains("10.70.200.7 is already allocated to handle vip"),
        "{err}"
    );
    let ds = ctl.datastore().await;
    assert!(
        trellis_ipam::store::addresses_of(&ds, "vip2")
            .await
            .unwrap()
            .is_empty(),
        "vip2 kept nothing"
    );
    let err = ctl.fails(&[
        "ipam",
        "assign",
        "--node",
        "node-1",
        "--handle",
        "x",
        "--ip",
        "10.200.0.1",
    ]);
    assert!(err.contains("10.200.0.1 is not in any IP pool"), "{err}");
    let err = ctl.fails(&["ipam", "assign", "--node", "node-1", "--handle", "x"]);
    assert!(err.contains("nothing to assign"), "{err}");
}
