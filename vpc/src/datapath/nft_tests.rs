use super::*;
use crate::datapath::fake::config;

const SNAT: &str = r#"add table inet trellis
add chain inet trellis vpc-prerouting { type filter hook prerouting priority -90; policy accept; }
flush chain inet trellis vpc-prerouting
add rule inet trellis vpc-prerouting iifname "eth0" ct state new ct mark set ct mark or 0x80
add rule inet trellis vpc-prerouting iifname "trellis*" ct state new ip daddr != { 10.90.0.0/16, 172.16.0.0/12 } fib daddr type != local ct mark set ct mark or 0x80
add rule inet trellis vpc-prerouting iifname "trellis*" ct mark and 0x80 == 0x80 meta mark set meta mark or 0x80
add chain inet trellis vpc-snat { type nat hook postrouting priority srcnat; policy accept; }
flush chain inet trellis vpc-snat
add rule inet trellis vpc-snat oifname "eth0" ct mark and 0x80 == 0x80 ip daddr != { 10.90.0.0/16, 172.16.0.0/12 } snat ip to 10.90.1.10 fully-random
"#;

const EXTERNAL_SNAT: &str = r#"add table inet trellis
add chain inet trellis vpc-prerouting { type filter hook prerouting priority -90; policy accept; }
flush chain inet trellis vpc-prerouting
add rule inet trellis vpc-prerouting iifname "eth0" ct state new ct mark set ct mark or 0x80
add rule inet trellis vpc-prerouting iifname "trellis*" ct mark and 0x80 == 0x80 meta mark set meta mark or 0x80
add chain inet trellis vpc-snat { type nat hook postrouting priority srcnat; policy accept; }
flush chain inet trellis vpc-snat
delete chain inet trellis vpc-snat
"#;

fn with_exclusion() -> VpcDatapathConfig {
    VpcDatapathConfig {
        exclude_snat_cidrs: vec!["172.16.0.0/12".parse().unwrap()],
        ..config()
    }
}

#[test]
fn snat_and_connmark_golden() {
    assert_eq!(render_nft(&with_exclusion()).unwrap(), SNAT);
}

#[test]
fn external_snat_drops_the_snat_chain_and_the_pod_marking() {
    let cfg = VpcDatapathConfig {
        external_snat: true,
        ..with_exclusion()
    };
    assert_eq!(render_nft(&cfg).unwrap(), EXTERNAL_SNAT);
}

#[test]
fn overlapping_cidrs_are_merged_and_the_mark_is_configurable() {
    let cfg = VpcDatapathConfig {
        vpc_cidrs: vec![
            "10.90.0.0/16".parse().unwrap(),
            "10.91.0.0/16".parse().unwrap(),
        ],
        exclude_snat_cidrs: vec![
            "10.90.4.0/24".parse().unwrap(),
            "10.90.8.9/16".parse().unwrap(),
        ],
        connmark: 0x4000,
        ..config()
    };
    let text = render_nft(&cfg).unwrap();
    assert!(text.contains("ip daddr != { 10.90.0.0/15 }"), "{text}");
    assert!(
        text.contains("ct mark and 0x4000 == 0x4000 meta mark set meta mark or 0x4000"),
        "{text}"
    );
}

#[test]
fn only_vpc_chains_are_named_and_removal_deletes_both() {
    for text in [render_nft(&with_exclusion()).unwrap(), render_nft_removal()] {
        for line in text
            .lines()
            .filter(|l| l.contains("chain") || l.starts_with("add rule"))
        {
            let chain = line.split_whitespace().nth(4).unwrap();
            assert!(chain.starts_with("vpc-"), "{line}");
        }
        assert!(
            !text.contains("delete table") && !text.contains("flush table"),
            "{text}"
        );
    }
    let removal = render_nft_removal();
    assert!(removal.contains("delete chain inet trellis vpc-prerouting\n"));
    assert!(removal.contains("delete chain inet trellis vpc-snat\n"));
}

#[test]
fn bad_config_is_named() {
    let e = |cfg: VpcDatapathConfig| render_nft(&cfg).unwrap_err().to_string();
    assert_eq!(
        e(VpcDatapathConfig {
            vpc_cidrs: vec![],
            ..config()
        }),
        "VPC SNAT needs at least one VPC CIDR (otherwise every destination would be SNATed)"
    );
    assert_eq!(
        e(VpcDatapathConfig { primary_if: "eth0\" accept".into(), ..config() }),
        "primary interface \"eth0\\\" accept\" cannot be used in an nft rule: only letters, digits, '-', '_' and '.' are accepted"
    );
    assert!(e(VpcDatapathConfig {
        pod_if_prefix: String::new(),
        ..config()
    })
    .contains("it is empty"));
    assert!(e(VpcDatapathConfig {
        connmark: 0,
        ..config()
    })
    .starts_with("connmark 0"));
}

#[test]
fn a_failed_run_names_the_command() {
    // `ip netns exec` of a namespace that cannot exist fails before nft runs; the error names
    // the command and what it said.
    let err = run_nft("add table inet trellis\n", Some("tv-no-such-netns-0")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ip netns exec tv-no-such-netns-"), "{text}");
}
