use super::*;
use crate::datapath::desired::{compute_desired, RuleKey};
use crate::datapath::fake::{config, enis, kernel_subnet_route, link, pods, FakeKernel};
use crate::datapath::msg::rule_message;
use crate::datapath::MAIN_TABLE;

fn node() -> FakeKernel {
    FakeKernel {
        links: vec![
            link(1, "lo", true, 65536),
            link(2, "eth0", true, 9001),
            link(3, "eth1", false, 1500),
        ],
        routes: vec![
            kernel_subnet_route("10.90.1.0/24".parse().unwrap(), 2),
            kernel_subnet_route("10.90.2.0/24".parse().unwrap(), 3),
        ],
        ..FakeKernel::default()
    }
}

fn run(k: &mut FakeKernel, d: &DesiredDatapath) -> Result<ApplyStats, ApplyError> {
    futures::executor::block_on(reconcile(k, d))
}

#[test]
fn first_pass_programs_everything_and_the_second_sends_nothing() {
    let mut k = node();
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let stats = run(&mut k, &d).unwrap();
    assert_eq!(stats.writes.len(), 8, "{:?}", stats.writes);
    assert_eq!(stats.writes, k.take_sent());
    // The primary ENI's subnet route stays; the secondary's is gone.
    assert_eq!(k.routes.len(), 3);
    // A restarted agent reads the kernel and finds nothing to do.
    assert_eq!(run(&mut k, &d).unwrap(), ApplyStats::default());
    assert!(k.sent.is_empty());
}

#[test]
fn foreign_rules_survive_and_a_removed_pod_loses_only_its_rules() {
    let mut k = node();
    let foreign_prio = {
        let mut m = rule_message(RuleKey::ToPod("10.90.1.20".parse().unwrap()), MAIN_TABLE);
        m.attributes[0] = rtnetlink::packet_route::rule::RuleAttribute::Priority(600);
        m
    };
    let foreign_len = {
        let mut m = rule_message(RuleKey::ToPod("10.90.0.0".parse().unwrap()), MAIN_TABLE);
        m.header.dst_len = 24;
        m
    };
    k.add_rule(foreign_prio);
    k.add_rule(foreign_len);
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    run(&mut k, &d).unwrap();
    assert_eq!(k.rules.len(), 6);
    k.take_sent();
    let fewer = compute_desired(&config(), &enis(), &pods()[1..]).unwrap();
    let stats = run(&mut k, &fewer).unwrap();
    assert_eq!(
        stats.writes,
        vec!["delete rule priority 512 to 10.90.1.20 lookup main"]
    );
    assert_eq!(k.rules.len(), 5, "both foreign rules stay");
}

#[test]
fn a_failed_write_is_reported_and_the_next_pass_retries_only_it() {
    let mut k = node();
    k.fail = Some(|r| r.what.contains("from 10.90.2.20"));
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let err = run(&mut k, &d).unwrap_err().to_string();
    assert!(
        err.starts_with("the VPC datapath is incomplete after 7 writes: add rule priority 1536 from 10.90.2.20 lookup 2:"),
        "{err}"
    );
    k.fail = None;
    k.take_sent();
    let stats = run(&mut k, &d).unwrap();
    assert_eq!(
        stats.writes,
        vec!["add rule priority 1536 from 10.90.2.20 lookup 2"]
    );
}

#[test]
fn a_missing_eni_interface_fails_the_pass_by_name() {
    let mut k = node();
    k.links.retain(|l| l.header.index != 3);
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    let err = run(&mut k, &d).unwrap_err().to_string();
    assert_eq!(
        err,
        "the VPC datapath is incomplete after 4 writes: ENI eni-b (MAC 0a:00:00:00:00:0b) has no interface eth1 in this network namespace"
    );
}

#[test]
fn a_delete_of_something_already_gone_counts_as_done() {
    let mut k = node();
    let d = compute_desired(&config(), &enis(), &pods()).unwrap();
    run(&mut k, &d).unwrap();
    k.take_sent();
    // The kernel route comes back, and vanishes again between our read and our delete.
    k.routes
        .push(kernel_subnet_route("10.90.2.0/24".parse().unwrap(), 3));
    k.fail = Some(|r| r.what.starts_with("delete route"));
    k.fail_errno = 3; // ESRCH
    assert_eq!(run(&mut k, &d).unwrap(), ApplyStats::default());
    assert_eq!(
        k.take_sent(),
        vec!["delete route 10.90.2.0/24 dev eth1 proto Kernel table 254"]
    );
    // Any other error on a delete is a failure.
    k.fail_errno = 1; // EPERM
    let err = run(&mut k, &d).unwrap_err().to_string();
    let prefix = "the VPC datapath is incomplete after 0 writes: \
                  delete route 10.90.2.0/24 dev eth1 proto Kernel table 254: ";
    assert!(err.starts_with(prefix), "{err}");
}
