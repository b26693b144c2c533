//! Root test of the VPC datapath with real packets, in namespaces named `tv-<pid>-<n>-*`:
//!
//! ```text
//!  pod1 (10.90.1.20, on eni-a)   pod2 (10.90.2.20, on eni-b)
//!     └─ trellisp1 ─┐    ┌─ trellisp2 ┘
//!                  node: eth0 10.90.1.10/24 (primary ENI), eth1 10.90.2.10/24 (device 1)
//!                    │ eth0          │ eth1
//!                  router: r-eth0 10.90.1.1, r-eth1 10.90.2.1, strict rp_filter, routes each
//!                    │ r-out            ENI address back to its ENI (as the VPC does)
//!                  out: 203.0.113.2 (outside VPC 10.90.0.0/16)
//! ```
//!
//! The router's strict reverse-path filter plays the VPC's source/destination check: a packet
//! whose source belongs to the other ENI is dropped, so a connection that works proves which
//! interface it left by, and the listener reports the source address it saw.
//!
//! The executor runs on a thread that has `setns`-ed into the node namespace (a netlink socket
//! belongs to the namespace it was opened in; the test process itself never leaves the
//! machine's). Each apply is a fresh executor, so every apply is also an agent restart.

use trellis_test_support::netns as netns_support;

use std::sync::atomic::{AtomicU32, Ordering};

use netns_support::{
    cleanup_stale, connect, ip, link_json, must_in_ns, require_root, routes, rules, source_seen,
    sysctl, tx_packets, Listener, NetnsGuard,
};
use nix::sched::{setns, CloneFlags};
use trellis_vpc::datapath::nft::render_nft_removal;
use trellis_vpc::datapath::{
    compute_desired, reconcile, render_nft, run_nft, Eni, PodAttachment, RtDatapathNetlink,
    VpcDatapathConfig,
};

const PREFIX: &str = "tv-";

struct World {
    node: String,
    router: String,
    out: String,
    pod1: String,
    pod2: String,
    _guard: NetnsGuard,
}

fn config(external_snat: bool) -> VpcDatapathConfig {
    VpcDatapathConfig {
        vpc_cidrs: vec!["10.90.0.0/16".parse().unwrap()],
        exclude_snat_cidrs: vec![],
        external_snat,
        primary_if: "eth0".into(),
        primary_ip: "10.90.1.10".parse().unwrap(),
        connmark: 0x80,
        pod_if_prefix: "trellis".into(),
        eni_mtu: 9001,
    }
}

fn enis() -> Vec<Eni> {
    vec![
        Eni::new(
            "eni-a",
            "eth0",
            0,
            "0a:00:00:00:00:0a",
            "10.90.1.0/24".parse().unwrap(),
            true,
        ),
        Eni::new(
            "eni-b",
            "eth1",
            1,
            "0a:00:00:00:00:0b",
            "10.90.2.0/24".parse().unwrap(),
            false,
        ),
    ]
}

fn pods() -> Vec<PodAttachment> {
    let pod = |ip: &str, veth: &str, eni: &str| PodAttachment {
        ip: ip.parse().unwrap(),
        host_veth: veth.into(),
        eni_id: eni.into(),
    };
    vec![
        pod("10.90.1.20", "trellisp1", "eni-a"),
        pod("10.90.2.20", "trellisp2", "eni-b"),
    ]
}

/// Builds the world of the module documentation; the ENI eth1 starts down at MTU 1500 with
/// its address, as a freshly attached ENI does, and nothing of the datapath exists yet.
fn world(test: &str) -> World {
    require_root(test);
    cleanup_stale(PREFIX);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut g = NetnsGuard::default();
    let [node, router, out, pod1, pod2] =
        ["node", "rtr", "out", "p1", "p2"].map(|n| g.add(&format!("{base}-{n}")));
    for ns in [&node, &router, &out, &pod1, &pod2] {
        // No IPv6 chatter in the counters.
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1");
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1");
    }
    for (eni, peer, addr, gw) in [
        ("eth0", "r-eth0", "10.90.1.10", "10.90.1.1"),
        ("eth1", "r-eth1", "10.90.2.10", "10.90.2.1"),
    ] {
        ip(&format!(
            "-n {node} link add {eni} type veth peer name {peer} netns {router}"
        ));
        ip(&format!("-n {node} addr add {addr}/24 dev {eni}"));
        ip(&format!("-n {router} addr add {gw}/24 dev {peer}"));
        ip(&format!("-n {router} link set {peer} mtu 9001 up"));
    }
    ip(&format!("-n {node} link set eth0 mtu 9001 up"));
    ip(&format!(
        "-n {node} route add default via 10.90.1.1 dev eth0"
    ));
    sysctl(&node, "net.ipv4.ip_forward=1");
    ip(&format!(
        "-n {router} link add r-out type veth peer name o-eth0 netns {out}"
    ));
    ip(&format!("-n {router} addr add 203.0.113.1/24 dev r-out"));
    ip(&format!("-n {router} link set r-out up"));
    ip(&format!("-n {out} addr add 203.0.113.2/24 dev o-eth0"));
    ip(&format!("-n {out} link set o-eth0 up"));
    ip(&format!("-n {out} route add default via 203.0.113.1"));
    sysctl(&router, "net.ipv4.ip_forward=1");
    sysctl(&router, "net.ipv4.conf.all.rp_filter=1");
    for (pod_ns, veth, pod_ip, eni_ip, router_if) in [
        (&pod1, "trellisp1", "10.90.1.20", "10.90.1.10", "r-eth0"),
        (&pod2, "trellisp2", "10.90.2.20", "10.90.2.10", "r-eth1"),
    ] {
        // What the CNI does: veth, /32 route on the host, a static gateway neighbour in the pod.
        ip(&format!(
            "-n {node} link add {veth} type veth peer name eth0 netns {pod_ns}"
        ));
        ip(&format!("-n {node} link set {veth} up"));
        ip(&format!(
            "-n {node} route add {pod_ip}/32 dev {veth} scope link"
        ));
        let mac = link_json(&node, veth)["address"]
            .as_str()
            .unwrap()
            .to_string();
        ip(&format!("-n {pod_ns} addr add {pod_ip}/32 dev eth0"));
        ip(&format!("-n {pod_ns} link set eth0 up"));
        ip(&format!(
            "-n {pod_ns} route add 169.254.1.1 dev eth0 scope link"
        ));
        ip(&format!(
            "-n {pod_ns} route add default via 169.254.1.1 dev eth0"
        ));
        ip(&format!(
            "-n {pod_ns} neigh add 169.254.1.1 lladdr {mac} dev eth0 nud permanent"
        ));
        // The VPC delivers an ENI's secondary address to that ENI.
        ip(&format!(
            "-n {router} route add {pod_ip}/32 via {eni_ip} dev {router_if}"
        ));
    }
    World {
        node,
        router,
        out,
        pod1,
        pod2,
        _guard: g,
    }
}

/// Applies the desired datapath in `ns` from a fresh executor on a thread inside `ns`;
/// returns its writes.
fn apply(ns: &str, cfg: &VpcDatapathConfig, pods: &[PodAttachment]) -> Vec<String> {
    let desired = compute_desired(cfg, &enis(), pods).unwrap_or_else(|e| panic!("{e}"));
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&netns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            tokio::spawn(conn);
            reconcile(&mut RtDatapathNetlink::new(handle), &desired).await
        })
        .unwrap_or_else(|e| panic!("reconcile in {path}: {e}"))
        .writes
    })
    .join()
    .expect("the datapath thread panicked")
}

fn apply_nft(ns: &str, transaction: &str) {
    if let Err(e) = run_nft(transaction, Some(ns)) {
        panic!("nft on this kernel rejected the VPC transaction (a missing nft feature is named in nft's answer): {e}\n{transaction}");
    }
}

fn setup(w: &World, cfg: &VpcDatapathConfig) {
    apply(&w.node, cfg, &pods());
    apply_nft(&w.node, &render_nft(cfg).unwrap());
}

#[test]
fn rules_tables_and_links_are_exact_reapply_is_a_noop_and_pod_removal_is_precise() {
    let w = world("rules_tables_and_links_are_exact");
    // Someone else's rules and nft objects, which must survive everything below.
    ip(&format!(
        "-n {} rule add to 10.90.0.0/24 lookup main priority 512",
        w.node
    ));
    ip(&format!(
        "-n {} rule add from 10.90.2.77 lookup 100 priority 1537",
        w.node
    ));
    apply_nft(&w.node, "add table inet trellis\nadd chain inet trellis np-foo\nadd rule inet trellis np-foo ip saddr 10.90.9.9 drop\n");

    let cfg = config(false);
    let writes = apply(&w.node, &cfg, &pods());
    assert_eq!(
        writes,
        vec![
            "set link eth1 up mtu 9001",
            "replace route 10.90.2.1/32 dev eth1 scope link table 2",
            "replace route 0.0.0.0/0 via 10.90.2.1 dev eth1 table 2",
            "add rule priority 512 to 10.90.1.20 lookup main",
            "add rule priority 512 to 10.90.2.20 lookup main",
            "add rule priority 1024 fwmark 0x80/0x80 lookup main",
            "add rule priority 1536 from 10.90.2.20 lookup 2",
            // Second round: the kernel made it when eth1 came up.
            "delete route 10.90.2.0/24 dev eth1 proto Kernel table 254",
        ]
    );
    let all_rules = vec![
        "512 from all dst 10.90.0.0 dstlen 24 table main",
        "512 from all dst 10.90.1.20 table main",
        "512 from all dst 10.90.2.20 table main",
        "1024 from all fwmark 0x80 fwmask 0x80 table main",
        "1536 from 10.90.2.20 table 2",
        "1537 from 10.90.2.77 table 100",
    ];
    assert_eq!(rules(&w.node), all_rules);
    let mut table2 = routes(&w.node, "2");
    table2.sort();
    assert_eq!(
        table2,
        vec![
            "10.90.2.1 dev eth1 scope link",
            "default via 10.90.2.1 dev eth1"
        ]
    );
    let mut main = routes(&w.node, "main");
    main.sort();
    assert_eq!(
        main,
        vec![
            "10.90.1.0/24 dev eth0 scope link",
            "10.90.1.20 dev trellisp1 scope link",
            "10.90.2.20 dev trellisp2 scope link",
            "default via 10.90.1.1 dev eth0",
        ]
    );
    let eth1 = link_json(&w.node, "eth1");
    assert_eq!(eth1["mtu"].as_u64(), Some(9001));
    assert!(
        eth1["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{eth1}"
    );

    apply_nft(&w.node, &render_nft(&cfg).unwrap());
    let nft_before = must_in_ns(&w.node, &["nft", "list", "table", "inet", "trellis"]);
    // A restarted agent: nothing to write, the same nft table.
    assert_eq!(apply(&w.node, &cfg, &pods()), Vec::<String>::new());
    apply_nft(&w.node, &render_nft(&cfg).unwrap());
    let nft_after = must_in_ns(&w.node, &["nft", "list", "table", "inet", "trellis"]);
    assert_eq!(nft_before, nft_after);
    assert!(
        nft_after.contains("chain np-foo") && nft_after.contains("ip saddr 10.90.9.9 drop"),
        "{nft_after}"
    );
    assert!(
        nft_after.contains("snat ip to 10.90.1.10 fully-random"),
        "{nft_after}"
    );

    // pod2 goes: exactly its two rules go with it.
    assert_eq!(
        apply(&w.node, &cfg, &pods()[..1]),
        vec![
            "delete rule priority 512 to 10.90.2.20 lookup main",
            "delete rule priority 1536 from 10.90.2.20 lookup 2",
        ]
    );
    let left: Vec<&str> = all_rules
        .into_iter()
        .filter(|r| !r.contains("10.90.2.20"))
        .collect();
    assert_eq!(rules(&w.node), left);
    assert_eq!(
        routes(&w.node, "2").len(),
        2,
        "the ENI table stays while the ENI is attached"
    );
}

#[test]
fn with_external_snat_a_secondary_eni_pod_leaves_by_its_own_eni_with_its_own_address() {
    let w = world("external_snat");
    setup(&w, &config(true));
    let (eth1_before, eth0_before) = (tx_packets(&w.node, "eth1"), tx_packets(&w.node, "eth0"));
    assert_eq!(
        source_seen(&w.pod2, &w.out, "203.0.113.2", 8081),
        "10.90.2.20"
    );
    let eth1_sent = tx_packets(&w.node, "eth1") - eth1_before;
    assert!(eth1_sent >= 3, "only {eth1_sent} packets left by eth1");
    // The primary-ENI pod is not SNATed either and uses the main table (eth0).
    assert_eq!(
        source_seen(&w.pod1, &w.out, "203.0.113.2", 8082),
        "10.90.1.20"
    );
    assert!(tx_packets(&w.node, "eth0") - eth0_before >= 3);
}

#[test]
fn without_external_snat_a_secondary_eni_pod_is_snated_to_the_primary_ip_via_the_primary_eni() {
    let w = world("snat");
    let cfg = config(false);
    setup(&w, &cfg);
    let eth0_before = tx_packets(&w.node, "eth0");
    assert_eq!(
        source_seen(&w.pod2, &w.out, "203.0.113.2", 8091),
        "10.90.1.10"
    );
    let eth0_sent = tx_packets(&w.node, "eth0") - eth0_before;
    assert!(eth0_sent >= 3, "only {eth0_sent} packets left by eth0");
    assert_eq!(
        source_seen(&w.pod1, &w.out, "203.0.113.2", 8092),
        "10.90.1.10"
    );
    // Inside the VPC the pod keeps its address (and its ENI: the router checks the source).
    assert_eq!(
        source_seen(&w.pod2, &w.router, "10.90.2.1", 8093),
        "10.90.2.20"
    );
    // An exclusion CIDR, applied as one replacing transaction, turns SNAT off for it.
    let excluded = VpcDatapathConfig {
        exclude_snat_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        ..cfg
    };
    apply_nft(&w.node, &render_nft(&excluded).unwrap());
    assert_eq!(
        source_seen(&w.pod2, &w.out, "203.0.113.2", 8094),
        "10.90.2.20"
    );
}

#[test]
fn replies_to_connections_that_arrived_on_the_primary_eni_leave_by_it() {
    let w = world("connmark");
    setup(&w, &config(true));
    // Traffic for pod2 now reaches the node by the primary ENI (as NodePort traffic does);
    // the router drops a reply from 10.90.2.20 that comes back by eth1.
    ip(&format!(
        "-n {} route replace 10.90.2.20/32 via 10.90.1.10 dev r-eth0",
        w.router
    ));
    assert_eq!(
        source_seen(&w.out, &w.pod2, "10.90.2.20", 8101),
        "203.0.113.2"
    );
    // Control: without the connmark chain the reply follows pod2's own table and is dropped.
    apply_nft(&w.node, &render_nft_removal());
    let l = Listener::start(&w.pod2, 8102);
    assert!(
        connect(&w.out, "10.90.2.20", 8102).is_err(),
        "connected without the connmark"
    );
    drop(l);
}
