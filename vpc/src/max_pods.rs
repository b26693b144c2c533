//! The AWS max-pods formula: how many pods a node can address with its ENIs, the number
//! kubelet's `--max-pods` should not exceed in VPC-native mode.
//!
//! - secondary IPs: `ENIs x (IPv4 per ENI - 1) + 2`. Each ENI's own primary address hosts no
//!   pod; the `+ 2` counts host-network pods (the agent, kube-proxy) that take no address.
//! - prefix delegation: `ENIs x ((IPv4 per ENI - 1) x 16) + 2`: every secondary slot holds a
//!   /28 prefix of 16 addresses.
//! - custom networking: pods live on ENIs in another subnet, never on the primary ENI, so
//!   one ENI fewer counts.
//!
//! The uncapped value is what AWS publishes in `misc/eni-max-pods.txt` of
//! amazon-vpc-cni-k8s. The recommended value is capped the way awslabs/amazon-eks-ami's
//! `max-pods-calculator.sh` caps it: at 250 when the type has more than 30 vCPUs, else at 110
//! (beyond that, kubelet and the container runtime rather than addresses are the limit).
//!
//! Two choices differ from that script, both to agree with what the VPC CNI actually does:
//! the ENI count is the default network card's (the script takes the instance-wide count, so
//! on multi-card types such as p4d.24xlarge its uncapped value exceeds `eni-max-pods.txt`);
//! and prefix delegation on a type without it is an error, where the script silently prints
//! the secondary-IP value. The VPC CNI falls back to secondary IPs on such nodes at run time
//! with a warning; a caller wanting that asks again without prefix delegation, so the answer
//! never claims a mode the node will not run.

use std::fmt;

use crate::limits::InstanceLimits;

/// Addresses in a /28 prefix.
pub const IPS_PER_PREFIX: u32 = 16;
/// The calculator's ceiling for types with at most [`HIGH_CPU_THRESHOLD`] vCPUs.
pub const LOW_CPU_CAP: u32 = 110;
/// The calculator's ceiling for types with more vCPUs.
pub const HIGH_CPU_CAP: u32 = 250;
/// vCPUs above which the higher ceiling applies (`CPU_COUNT -gt 30` in the calculator).
pub const HIGH_CPU_THRESHOLD: u32 = 30;

/// How the node assigns pod addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    pub prefix_delegation: bool,
    pub custom_networking: bool,
}

/// The max-pods answer with its inputs, so it can be printed with its working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPods {
    pub mode: Mode,
    /// ENIs of the default network card, before custom networking takes the primary away.
    pub enis: u32,
    /// ENIs that carry pod addresses.
    pub enis_for_pods: u32,
    pub ipv4_per_eni: u32,
    pub vcpus: u32,
    /// The uncapped formula value (the `eni-max-pods.txt` value in secondary-IP mode).
    pub formula: u32,
    /// 110 or 250, by vCPUs.
    pub cap: u32,
    /// `min(formula, cap)`: what kubelet's `--max-pods` should be set to.
    pub recommended: u32,
}

impl MaxPods {
    /// The formula with its symbols, e.g. `ENIs x (IPv4 per ENI - 1) + 2`.
    pub fn formula_symbols(&self) -> &'static str {
        match (self.mode.prefix_delegation, self.mode.custom_networking) {
            (false, false) => "ENIs x (IPv4 per ENI - 1) + 2",
            (false, true) => "(ENIs - 1) x (IPv4 per ENI - 1) + 2",
            (true, false) => "ENIs x ((IPv4 per ENI - 1) x 16) + 2",
            (true, true) => "(ENIs - 1) x ((IPv4 per ENI - 1) x 16) + 2",
        }
    }
}

impl fmt::Display for MaxPods {
    /// The formula with the numbers put in, e.g. `3 x (10 - 1) + 2 = 29`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enis = if self.mode.custom_networking {
            format!("({} - 1)", self.enis)
        } else {
            self.enis.to_string()
        };
        if self.mode.prefix_delegation {
            write!(
                f,
                "{enis} x (({} - 1) x {IPS_PER_PREFIX}) + 2 = {}",
                self.ipv4_per_eni, self.formula
            )
        } else {
            write!(
                f,
                "{enis} x ({} - 1) + 2 = {}",
                self.ipv4_per_eni, self.formula
            )
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaxPodsError {
    #[error(
        "instance type {instance_type} ({hypervisor}, not bare metal) does not support prefix \
         delegation: only Nitro and bare-metal instances get /28 prefixes"
    )]
    PrefixDelegationUnsupported {
        instance_type: String,
        hypervisor: &'static str,
    },
}

/// Max pods of `instance_type` with `limits` in `mode`.
pub fn max_pods(
    instance_type: &str,
    limits: &InstanceLimits,
    mode: Mode,
) -> Result<MaxPods, MaxPodsError> {
    if mode.prefix_delegation && !limits.supports_prefix_delegation() {
        return Err(MaxPodsError::PrefixDelegationUnsupported {
            instance_type: instance_type.to_string(),
            hypervisor: limits.hypervisor.as_str(),
        });
    }
    let enis_for_pods = if mode.custom_networking {
        limits.enis.saturating_sub(1)
    } else {
        limits.enis
    };
    let per_eni = limits.ipv4_per_eni.saturating_sub(1);
    let per_eni = if mode.prefix_delegation {
        per_eni * IPS_PER_PREFIX
    } else {
        per_eni
    };
    let formula = enis_for_pods * per_eni + 2;
    let cap = if limits.vcpus > HIGH_CPU_THRESHOLD {
        HIGH_CPU_CAP
    } else {
        LOW_CPU_CAP
    };
    Ok(MaxPods {
        mode,
        enis: limits.enis,
        enis_for_pods,
        ipv4_per_eni: limits.ipv4_per_eni,
        vcpus: limits.vcpus,
        formula,
        cap,
        recommended: formula.min(cap),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::limits_for;

    const SECONDARY: Mode = Mode {
        prefix_delegation: false,
        custom_networking: false,
    };
    const PREFIX: Mode = Mode {
        prefix_delegation: true,
        custom_networking: false,
    };
    const CUSTOM: Mode = Mode {
        prefix_delegation: false,
        custom_networking: true,
    };

    fn of(instance_type: &str, mode: Mode) -> MaxPods {
        let limits = limits_for(instance_type).unwrap();
        max_pods(instance_type, &limits, mode).unwrap()
    }

    /// (type, eni-max-pods.txt value, recommended (capped) value)
    const PUBLISHED: &[(&str, u32, u32)] = &[
        ("t3.nano", 4, 4),
        ("t3.micro", 4, 4),
        ("t3.small", 11, 11),
        ("t2.micro", 4, 4),
        ("t2.nano", 4, 4),
        ("a1.medium", 8, 8),
        ("m4.large", 20, 20),
        ("m5.large", 29, 29),
        ("c5.large", 29, 29),
        ("m5.xlarge", 58, 58),
        ("r5.2xlarge", 58, 58),
        ("x1.32xlarge", 234, 234),
        ("c5.18xlarge", 737, 250),
        ("m6i.32xlarge", 737, 250),
        ("m5.metal", 737, 250),
        ("p4d.24xlarge", 737, 250),
    ];

    #[test]
    fn published_values() {
        for &(t, published, recommended) in PUBLISHED {
            let m = of(t, SECONDARY);
            assert_eq!((t, m.formula, m.recommended), (t, published, recommended));
        }
    }

    #[test]
    fn cap_follows_vcpus() {
        // m5.4xlarge: 16 vCPUs, 8 ENIs x 29 + 2 = 234, capped at 110.
        let m = of("m5.4xlarge", SECONDARY);
        assert_eq!(
            (m.vcpus, m.formula, m.cap, m.recommended),
            (16, 234, 110, 110)
        );
        // c5.9xlarge: 36 vCPUs, 8 x 29 + 2 = 234 under the 250 cap.
        let m = of("c5.9xlarge", SECONDARY);
        assert_eq!(
            (m.vcpus, m.formula, m.cap, m.recommended),
            (36, 234, 250, 234)
        );
        // Exactly 30 vCPUs is still "low" (the calculator tests `-gt 30`).
        let thirty = InstanceLimits {
            vcpus: 30,
            ..limits_for("c5.9xlarge").unwrap()
        };
        assert_eq!(max_pods("x", &thirty, SECONDARY).unwrap().cap, 110);
    }

    #[test]
    fn prefix_delegation() {
        let m = of("m5.large", PREFIX);
        assert_eq!((m.formula, m.recommended), (3 * (9 * 16) + 2, 110));
        assert_eq!(m.to_string(), "3 x ((10 - 1) x 16) + 2 = 434");
        let m = of("t3.small", PREFIX);
        assert_eq!((m.formula, m.recommended), (3 * (3 * 16) + 2, 110));
        let m = of("c5.18xlarge", PREFIX);
        assert_eq!((m.formula, m.recommended), (15 * (49 * 16) + 2, 250));
        // Bare metal reports no hypervisor but takes prefixes.
        assert_eq!(of("m5.metal", PREFIX).formula, 15 * 49 * 16 + 2);
    }

    #[test]
    fn prefix_delegation_refused_off_nitro() {
        let limits = limits_for("m4.large").unwrap();
        let err = max_pods("m4.large", &limits, PREFIX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance type m4.large (xen, not bare metal) does not support prefix delegation: \
             only Nitro and bare-metal instances get /28 prefixes"
        );
    }

    #[test]
    fn custom_networking_leaves_out_the_primary_eni() {
        let m = of("m5.large", CUSTOM);
        assert_eq!((m.enis, m.enis_for_pods, m.formula), (3, 2, 20));
        assert_eq!(m.to_string(), "(3 - 1) x (10 - 1) + 2 = 20");
        assert_eq!(m.formula_symbols(), "(ENIs - 1) x (IPv4 per ENI - 1) + 2");
        assert_eq!(of("t3.small", CUSTOM).formula, 8);
        let both = Mode {
            prefix_delegation: true,
            custom_networking: true,
        };
        let m = of("m5.large", both);
        assert_eq!((m.formula, m.recommended), (2 * 9 * 16 + 2, 110));
        assert_eq!(m.to_string(), "(3 - 1) x ((10 - 1) x 16) + 2 = 290");
    }

    #[test]
    fn display_secondary() {
        let m = of("t3.small", SECONDARY);
        assert_eq!(m.to_string(), "3 x (4 - 1) + 2 = 11");
        assert_eq!(m.formula_symbols(), "ENIs x (IPv4 per ENI - 1) + 2");
    }

    /// Every type both in AWS's published list and in the generated table gets the published
    /// value: the table and the formula agree with AWS's generator.
    #[test]
    fn every_type_agrees_with_eni_max_pods_txt() {
        let published = include_str!("../tests/data/eni-max-pods.txt");
        let mut compared = 0;
        for line in published.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (t, value) = line.split_once(' ').expect("TYPE VALUE line");
            let value: u32 = value.trim().parse().expect("numeric max pods");
            let Some(limits) = limits_for(t) else {
                continue;
            };
            let m = max_pods(t, &limits, SECONDARY).unwrap();
            assert_eq!(
                m.formula, value,
                "{t}: ours {} published {value}",
                m.formula
            );
            compared += 1;
        }
        // The table has 1263 types, all of them in the published list.
        assert_eq!(compared, 1263);
    }
}
