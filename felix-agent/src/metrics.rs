//! Prometheus metrics of the agent (served at `/metrics`).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Op {
    Add,
    Endpoint,
    Del,
    Gc,
    Status,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Ok,
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: Op,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub op: Op,
    pub result: Outcome,
}

/// Every metric the agent exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Agent API requests by operation and result.
    pub requests: Family<ResultLabels, Counter>,
    /// Time to serve each API request, by operation (the agent's share of a CNI ADD or DEL).
    pub latency: Family<OpLabels, Histogram>,
    /// Addresses handed out / released by this node's IPAM.
    pub addresses_allocated: Counter,
    pub addresses_released: Counter,
    /// Dataplane passes that failed (the next pass re-reads the kernel and retries).
    pub reconcile_errors: Counter,
    /// Netlink writes the dataplane made: zero on a restart that finds everything in place.
    pub dataplane_writes: Counter,
    /// Routes to other nodes' blocks in the kernel.
    pub routes_programmed: Gauge,
    /// Dataplane features this node cannot provide (e.g. IPIP without the kernel module); the
    /// agent's status names them.
    pub dataplane_problems: Gauge,
    /// VPC-native backend: the node's max pods (the AWS formula, capped), its ENIs, and its
    /// pool's addresses in all, held by pods and cooling down; 1 while EC2 reports a problem
    /// (throttling, a limit, a full subnet), named in the agent status.
    pub vpc_max_pods: Gauge,
    pub vpc_enis: Gauge,
    pub vpc_addresses: Gauge,
    pub vpc_assigned: Gauge,
    pub vpc_cooling: Gauge,
    pub vpc_ec2_problem: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3 s: an ADD's agent share is ~1 ms on a held block, more when claiming.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let requests = Family::<ResultLabels, Counter>::default();
        let latency = Family::<OpLabels, Histogram>::new_with_constructor(latency_histogram);
        let addresses_allocated = Counter::default();
        let addresses_released = Counter::default();
        let reconcile_errors = Counter::default();
        let dataplane_writes = Counter::default();
        let routes_programmed = Gauge::default();
        let dataplane_problems = Gauge::default();
        registry.register(
            "agent_requests",
            "Agent API requests by operation and result",
            requests.clone(),
        );
        registry.register(
            "agent_request_duration_seconds",
            "Time the agent took to serve an API request, by operation",
            latency.clone(),
        );
        registry.register(
            "ipam_addresses_allocated",
            "Pod addresses allocated by this node",
            addresses_allocated.clone(),
        );
        registry.register(
            "ipam_addresses_released",
            "Pod addresses released by this node",
            addresses_released.clone(),
        );
        registry.register(
            "dataplane_reconcile_errors",
            "Dataplane passes that failed and will be retried",
            reconcile_errors.clone(),
        );
        registry.register(
            "dataplane_writes",
            "Netlink requests the dataplane sent",
            dataplane_writes.clone(),
        );
        registry.register(
            "dataplane_routes_programmed",
            "Routes to other nodes' blocks in the kernel",
            routes_programmed.clone(),
        );
        registry.register(
            "dataplane_problems",
            "Dataplane features this node cannot provide (named in the agent status)",
            dataplane_problems.clone(),
        );
        let vpc = [
            (
                "vpc_max_pods",
                "Max pods of this VPC node (AWS formula, capped)",
            ),
            ("vpc_enis", "ENIs attached to this VPC node"),
            ("vpc_pool_addresses", "Addresses in this node's ENI pool"),
            ("vpc_pool_assigned", "ENI pool addresses held by pods"),
            (
                "vpc_pool_cooling",
                "ENI pool addresses cooling down after a release",
            ),
            (
                "vpc_ec2_problem",
                "1 while EC2 reports a problem to this node's ENI pool (see the agent status)",
            ),
        ]
        .map(|(name, help)| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        });
        let [vpc_max_pods, vpc_enis, vpc_addresses, vpc_assigned, vpc_cooling, vpc_ec2_problem] =
            vpc;
        Self {
            vpc_max_pods,
            vpc_enis,
            vpc_addresses,
            vpc_assigned,
            vpc_cooling,
            vpc_ec2_problem,
            registry,
            requests,
            latency,
            addresses_allocated,
            addresses_released,
            reconcile_errors,
            dataplane_writes,
            routes_programmed,
            dataplane_problems,
        }
    }
}

impl Metrics {
    /// Records one API request.
    pub fn observe(&self, op: Op, ok: bool, took: Duration) {
        let result = if ok { Outcome::Ok } else { Outcome::Error };
        self.requests
            .get_or_create(&ResultLabels { op, result })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_latency_and_addresses() {
        let m = Metrics::default();
        m.observe(Op::Add, true, Duration::from_micros(900));
        m.observe(Op::Add, false, Duration::from_millis(3));
        m.addresses_allocated.inc_by(2);
        let text = m.render();
        assert!(
            text.contains("trellis_agent_requests_total{op=\"Add\",result=\"Ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("trellis_agent_requests_total{op=\"Add\",result=\"Error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("trellis_agent_request_duration_seconds_count{op=\"Add\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("trellis_ipam_addresses_allocated_total 2"),
            "{text}"
        );
    }
}
