//! The BGP loop: datastore -> plan -> speaker and installer; speaker -> installer -> kernel.
//! See the module documentation of [`super`] for the picture.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{select_all, StreamExt};
use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use trellis_agent_api::{BgpPeerStatus, BgpStatus};
use trellis_bgp_speaker::export::NextHopMode;
use trellis_bgp_speaker::family::Family;
use trellis_bgp_speaker::kernel::{KernelSync, KernelSyncConfig, RouteTable, RtNetlinkTable};
use trellis_bgp_speaker::speaker::{
    GracefulRestart, LocalRoute, PeerConfig, PeerStatus, RouteEvent, Speaker, SpeakerConfig,
    TtlMode,
};
use trellis_datastore::resources::bgp::{BgpConfigurationSpec, BgpPassword, BindMode};
use trellis_datastore::resources::{
    BgpPeerSpec, EncapMode, IpPoolSpec, IpamBlockSpec, Node, NodeSpec,
};
use trellis_datastore::watcher::{Watcher, WatcherEvent};
use trellis_datastore::{codec, keys, Datastore, KeyValue, WatchEvent};

use super::advertise::desired_originations;
use super::installer::Installer;
use super::kernel_filter::KernelFilter;
use super::peers::{desired_peers, DesiredPeer};
use super::BgpStatusCell;

/// What the datastore says, for the BGP loop.
const PREFIXES: [&str; 5] = [
    keys::NODES,
    keys::IPAM_BLOCKS,
    keys::IPPOOLS,
    keys::BGP_PEERS,
    keys::BGP_CONFIG,
];

#[derive(Debug, Clone)]
pub struct BgpAgentConfig {
    pub node_name: String,
    /// This node's IPv4 underlay subnet (from autodetection); otherwise the Node's
    /// `spec.bgp.ipv4Address` is used.
    pub underlay_subnet: Option<IpNet>,
    /// How often our kernel routes are re-read and repaired.
    pub resync_interval: Duration,
}

/// Settings that need a new speaker when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    asn: u32,
    router_id: Ipv4Addr,
    listen: SocketAddr,
    cluster_id: Option<Ipv4Addr>,
    restart_time: u16,
    next_hop_v4: Option<Ipv4Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    /// Paths are selected only through next hops on these subnets (none on a reflector,
    /// which passes on paths it does not use itself).
    next_hop_subnets: Vec<IpNet>,
}

/// Everything the datastore asks of this node's speaker.
#[derive(Debug, Clone)]
struct Plan {
    settings: Settings,
    peers: BTreeMap<IpAddr, DesiredPeer>,
    originations: BTreeMap<IpNet, LocalRoute>,
    filter: KernelFilter,
}

/// The raw objects under each watched prefix.
#[derive(Debug, Default)]
struct Cache {
    items: BTreeMap<String, KeyValue>,
    synced: BTreeSet<&'static str>,
}

impl Cache {
    fn on_event(&mut self, prefix: &'static str, ev: WatcherEvent) {
        match ev {
            WatcherEvent::Synced { items, .. } | WatcherEvent::Resynced { items, .. } => {
                self.synced.insert(prefix);
                self.items.retain(|k, _| !k.starts_with(prefix));
                self.items
                    .extend(items.into_iter().map(|kv| (kv.key.clone(), kv)));
            }
            WatcherEvent::Changed(WatchEvent::Put(kv)) => {
                self.items.insert(kv.key.clone(), kv);
            }
            WatcherEvent::Changed(WatchEvent::Delete { key, .. }) => {
                self.items.remove(&key);
            }
        }
    }

    fn in_sync(&self) -> bool {
        self.synced.len() == PREFIXES.len()
    }

    /// Decoded objects under `prefix`; undecodable ones are logged and skipped.
    fn objects<S: trellis_datastore::Spec>(
        &self,
        prefix: &str,
    ) -> Vec<(String, trellis_datastore::Object<S>)> {
        self.items
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, kv)| match codec::decode_object::<S>(kv) {
                Ok(v) => Some((k.clone(), v.value)),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "skipping an undecodable object");
                    None
                }
            })
            .collect()
    }
}

/// The effective BGPConfiguration of `me`: `default` overlaid with `node.ME`.
fn effective_config(cache: &Cache, me: &str) -> BgpConfigurationSpec {
    let all = cache.objects::<BgpConfigurationSpec>(keys::BGP_CONFIG);
    let find = |key: String| {
        all.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, o)| o.spec.clone())
    };
    let global = find(keys::BGP_CONFIG.to_string()).unwrap_or_default();
    match find(format!("{}/node.{me}", keys::BGP_CONFIG)) {
        Some(node) => global.overlay(&node),
        None => global,
    }
}

fn plan(cache: &Cache, cfg: &BgpAgentConfig) -> Option<Plan> {
    let me = cfg.node_name.as_str();
    let bgp_cfg = effective_config(cache, me);
    let nodes: BTreeMap<String, Node> = cache
        .objects::<NodeSpec>(keys::NODES)
        .into_iter()
        .map(|(_, n)| (n.metadata.name.clone(), n))
        .collect();
    let local = nodes.get(me)?;
    let pools: Vec<_> = cache
        .objects::<IpPoolSpec>(keys::IPPOOLS)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let blocks: Vec<IpamBlockSpec> = cache
        .objects::<IpamBlockSpec>(keys::IPAM_BLOCKS)
        .into_iter()
        .map(|(_, b)| b.spec)
        .collect();
    let bgp_peers: Vec<_> = cache
        .objects::<BgpPeerSpec>(keys::BGP_PEERS)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let v4 = local.spec.ipv4();
    let v6 = local.spec.ipv6();
    let node_bgp = local.spec.bgp.clone().unwrap_or_default();
    let listen_ip = match (bgp_cfg.bind_mode(), v4) {
        (BindMode::NodeIp, Some(a)) => IpAddr::V4(a),
        _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let mut subnets: Vec<IpNet> = cfg
        .underlay_subnet
        .or(node_bgp.ipv4_address)
        .map(|n| n.trunc())
        .into_iter()
        .collect();
    subnets.extend(node_bgp.ipv6_address.map(|n| n.trunc()));
    let settings = Settings {
        asn: node_bgp.as_number.unwrap_or_else(|| bgp_cfg.as_number()),
        router_id: v4.unwrap_or_else(|| router_id_from_name(me)),
        listen: SocketAddr::new(listen_ip, bgp_cfg.listen_port()),
        cluster_id: node_bgp.route_reflector_cluster_id,
        restart_time: u16::try_from(bgp_cfg.node_mesh_max_restart_time().as_secs())
            .unwrap_or(u16::MAX),
        next_hop_v4: v4,
        next_hop_v6: v6,
        next_hop_subnets: match node_bgp.route_reflector_cluster_id {
            Some(_) => vec![],
            None => subnets.clone(),
        },
    };
    let filter = KernelFilter {
        encapsulated_pools: pools
            .iter()
            .filter(|p| {
                p.spec.vxlan_mode != EncapMode::Never || p.spec.ipip_mode != EncapMode::Never
            })
            .map(|p| p.spec.cidr)
            .collect(),
        subnets,
        own: v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(v6.map(IpAddr::V6))
            .collect(),
    };
    Some(Plan {
        settings,
        peers: desired_peers(me, &nodes, &bgp_peers, &bgp_cfg),
        originations: desired_originations(me, &blocks, &pools, &bgp_cfg),
        filter,
    })
}

/// A stable router id for a node without an IPv4 address (a hash of its name, as Calico does).
fn router_id_from_name(name: &str) -> Ipv4Addr {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Ipv4Addr::from(h | 0x0100_0000)
}

/// The password of a peer: from the agent's environment or a file, never from the datastore.
pub fn read_password(p: &BgpPassword) -> Result<String, String> {
    match (&p.env, &p.file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("reading {path}: {e}")),
        (None, None) => Err("neither file nor env is set".into()),
    }
}

/// The speaker's configuration of one desired peer. An eBGP peer off this node's subnets gets
/// multihop (TTL 64, BIRD's `multihop` default) unless it asks for TTL security.
fn peer_config(d: &DesiredPeer, local_asn: u32, subnets: &[IpNet]) -> Result<PeerConfig, String> {
    let mut p = PeerConfig::new(d.addr, d.asn);
    p.port = d.port;
    p.local_addr = d.local_addr;
    p.passive = d.passive;
    p.rr_client = d.rr_client;
    p.next_hop_mode = if d.keep_next_hop {
        NextHopMode::Keep
    } else {
        NextHopMode::Auto
    };
    p.hold_time = d.hold_time;
    p.keepalive = d.keepalive;
    p.restart_time = d.restart_time;
    p.allow_local_as = d.allow_local_as;
    p.kind = d.kind.label().to_string();
    // One family per session, as Calico's BIRD runs them: IPv4 routes over IPv4 sessions and
    // IPv6 over IPv6, so a next hop is always of the session's own family.
    p.families = [match d.addr {
        IpAddr::V4(_) => Family::Ipv4Unicast,
        IpAddr::V6(_) => Family::Ipv6Unicast,
    }]
    .into();
    p.password = d.password.as_ref().map(read_password).transpose()?;
    p.ttl = match d.ttl_security {
        Some(hops) => TtlMode::Security { hops },
        None if d.asn != local_asn && !subnets.iter().any(|s| s.contains(&d.addr)) => {
            TtlMode::Multihop(64)
        }
        None => TtlMode::Default,
    };
    Ok(p)
}

/// A running speaker and what it was told.
#[derive(Debug)]
struct Running {
    speaker: Speaker,
    settings: Settings,
    peers: BTreeMap<IpAddr, (DesiredPeer, PeerConfig)>,
    originations: BTreeMap<IpNet, LocalRoute>,
}

/// Runs until the datastore watches end. Errors only when the kernel cannot be read at start.
pub async fn run(
    ds: Arc<dyn Datastore>,
    cfg: BgpAgentConfig,
    status: Arc<BgpStatusCell>,
) -> anyhow::Result<()> {
    let table = RtNetlinkTable::connect()?;
    let kernel = KernelSyncConfig::default();
    let adopted: Vec<_> = table
        .dump_ours(kernel.table)
        .await
        .map_err(|e| anyhow::anyhow!("reading our BGP routes from the kernel: {e}"))?
        .into_iter()
        .map(|r| r.route)
        .collect();
    let restarting = !adopted.is_empty();
    tracing::info!(
        adopted = adopted.len(),
        "BGP: routes of a previous run kept until peers resend theirs"
    );
    let mut installer = Installer::new(KernelSync::new(kernel)?, adopted);
    let mut events = select_all(PREFIXES.map(|p| {
        Watcher::new(ds.clone(), p)
            .into_stream()
            .map(move |e| (p, e))
            .boxed()
    }));
    let mut cache = Cache::default();
    let mut dirty = false;
    let mut running: Option<Running> = None;
    let mut routes: Option<UnboundedReceiver<RouteEvent>> = None;
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    let mut first_start = true;
    let mut ready_deadline: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut resync = tokio::time::interval(cfg.resync_interval);
    let mut backoff = Duration::from_millis(250);
    let mut retry_at: Option<Instant> = None;
    let mut last_plan: Option<Plan> = None;
    loop {
        let handover = installer.handover_deadline();
        tokio::select! {
            ev = events.next() => match ev {
                Some((prefix, Ok(ev))) => { cache.on_event(prefix, ev); dirty = true; }
                Some((prefix, Err(e))) => tracing::warn!(%prefix, error = %e, "watch"),
                None => return Ok(()),
            },
            ev = next_route(&mut routes) => match ev {
                Some(ev) => {
                    installer.on_event(ev);
                    if let Some(rx) = routes.as_mut() {
                        while let Ok(ev) = rx.try_recv() {
                            installer.on_event(ev);
                        }
                    }
                }
                None => routes = None,
            },
            _ = tick.tick() => {
                let peers = match &running {
                    Some(r) => r.speaker.status().await.unwrap_or_default(),
                    None => vec![],
                };
                if !installer.ready() && restart_complete(&peers, running.as_ref(), ready_deadline) {
                    tracing::info!("BGP: every peer has resent its table; dropping routes nobody re-announced");
                    installer.set_ready();
                }
                publish(&status, running.as_ref(), &peers, &installer, &problems);
            }
            _ = resync.tick() => installer.request_resync(),
            _ = sleep_until(handover) => installer.end_handover(),
            _ = sleep_until(retry_at) => { retry_at = None; dirty = true; }
        }
        if dirty && cache.in_sync() {
            dirty = false;
            if let Some(p) = plan(&cache, &cfg) {
                last_plan = Some(p);
            }
            if let Some(p) = &last_plan {
                installer.set_filter(p.filter.clone());
                let needs_start = running.as_ref().is_none_or(|r| r.settings != p.settings);
                if needs_start {
                    if let Some(old) = running.take() {
                        tracing::info!("BGP: speaker settings changed; restarting it");
                        old.speaker.stop().await;
                        installer.restart();
                    }
                    let mut sc = SpeakerConfig::new(p.settings.asn, p.settings.router_id);
                    sc.listen = Some(p.settings.listen);
                    sc.cluster_id = p.settings.cluster_id;
                    sc.graceful_restart = Some(GracefulRestart {
                        restart_time: p.settings.restart_time,
                        restarting: restarting && first_start,
                    });
                    sc.next_hop_v4 = p.settings.next_hop_v4;
                    sc.next_hop_v6 = p.settings.next_hop_v6;
                    sc.next_hop_subnets = p.settings.next_hop_subnets.clone();
                    match Speaker::start(sc).await {
                        Ok((speaker, rx)) => {
                            problems.remove("listen");
                            first_start = false;
                            ready_deadline = Some(
                                Instant::now()
                                    + Duration::from_secs(p.settings.restart_time.into()),
                            );
                            tracing::info!(asn = p.settings.asn, router_id = %p.settings.router_id, listen = %p.settings.listen, "BGP speaker started");
                            routes = Some(rx);
                            running = Some(Running {
                                speaker,
                                settings: p.settings.clone(),
                                peers: BTreeMap::new(),
                                originations: BTreeMap::new(),
                            });
                        }
                        Err(e) => {
                            problems.insert("listen".into(), e.to_string());
                            retry_at = Some(Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
                if let Some(r) = running.as_mut() {
                    reconcile(r, p, &mut problems);
                }
            }
        }
        if installer.has_pending_work() && retry_at.is_none() {
            match installer.apply(&table).await {
                Ok(_) => backoff = Duration::from_millis(250),
                Err(e) => {
                    tracing::warn!(error = %e, "BGP kernel routes incomplete; retrying");
                    problems.insert("kernel".into(), e.to_string());
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            problems.remove("kernel");
        }
    }
}

async fn next_route(rx: &mut Option<UnboundedReceiver<RouteEvent>>) -> Option<RouteEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tells the speaker what changed: originations first (so a session coming up gets a complete
/// table), then peers.
fn reconcile(r: &mut Running, p: &Plan, problems: &mut BTreeMap<String, String>) {
    for prefix in r.originations.keys() {
        if !p.originations.contains_key(prefix) {
            let _ = r.speaker.withdraw(*prefix);
        }
    }
    for (prefix, route) in &p.originations {
        if r.originations.get(prefix) != Some(route) {
            let _ = r.speaker.originate_with(*prefix, route.clone());
        }
    }
    r.originations = p.originations.clone();
    problems.retain(|k, _| !k.starts_with("peer "));
    let mut wanted = BTreeMap::new();
    for (addr, d) in &p.peers {
        match peer_config(d, p.settings.asn, &p.filter.subnets) {
            Ok(pc) => {
                wanted.insert(*addr, (d.clone(), pc));
            }
            Err(why) => {
                problems.insert(
                    format!("peer {addr}"),
                    format!("peer {addr} ({}): {why}", d.source),
                );
            }
        }
    }
    for addr in r.peers.keys() {
        if !wanted.contains_key(addr) {
            tracing::info!(peer = %addr, "BGP peer removed");
            let _ = r.speaker.remove_peer(*addr);
        }
    }
    let mut refused = Vec::new();
    for (addr, (d, pc)) in &wanted {
        if r.peers.get(addr).map(|(_, old)| old) != Some(pc) {
            tracing::info!(peer = %addr, asn = d.asn, kind = d.kind.label(), source = %d.source, "BGP peer configured");
            if let Err(e) = r.speaker.add_peer(pc.clone()) {
                problems.insert(
                    format!("peer {addr}"),
                    format!("{} ({}): {e}", addr, d.source),
                );
                refused.push(*addr);
            }
        }
    }
    for addr in refused {
        // Not kept as configured, so the next plan tries again; an old session goes.
        wanted.remove(&addr);
        if r.peers.contains_key(&addr) {
            let _ = r.speaker.remove_peer(addr);
        }
    }
    r.peers = wanted;
}

/// After a restart: every configured peer is up and has sent End-of-RIB, or the restart time
/// is over.
fn restart_complete(
    peers: &[PeerStatus],
    running: Option<&Running>,
    deadline: Option<Instant>,
) -> bool {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return true;
    }
    let Some(r) = running else { return false };
    !r.peers.is_empty()
        && r.peers
            .keys()
            .all(|a| peers.iter().any(|s| s.addr == *a && s.end_of_rib_received))
}

fn publish(
    cell: &BgpStatusCell,
    running: Option<&Running>,
    peers: &[PeerStatus],
    installer: &Installer,
    problems: &BTreeMap<String, String>,
) {
    let Some(r) = running else {
        if !problems.is_empty() {
            cell.set(BgpStatus {
                asn: 0,
                router_id: String::new(),
                listen_port: 0,
                route_reflector_cluster_id: None,
                peers: vec![],
                prefixes_originated: 0,
                routes_installed: installer.installed_count(),
                restart_pending: !installer.ready(),
                problems: problems.values().cloned().collect(),
            });
        }
        return;
    };
    let mut all_problems: Vec<String> = problems.values().cloned().collect();
    let unreachable = installer.unreachable();
    if !unreachable.is_empty() {
        all_problems.push(format!(
            "{} learned prefixes (e.g. {}) have no next hop on this node's subnets and are not installed",
            unreachable.len(),
            unreachable[0]
        ));
    }
    let since = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    cell.set(BgpStatus {
        asn: r.settings.asn,
        router_id: r.settings.router_id.to_string(),
        listen_port: r.settings.listen.port(),
        route_reflector_cluster_id: r.settings.cluster_id.map(|c| c.to_string()),
        peers: peers
            .iter()
            .map(|s| {
                let d = r.peers.get(&s.addr).map(|(d, _)| d);
                BgpPeerStatus {
                    address: s.addr,
                    port: d.map_or(179, |d| d.port),
                    asn: s.asn,
                    kind: s.kind.clone(),
                    source: d.map_or_else(String::new, |d| d.source.clone()),
                    state: format!("{:?}", s.state),
                    since: since(s.since),
                    prefixes_received: s.prefixes_received,
                    prefixes_advertised: s.prefixes_advertised,
                    stale: s.stale,
                    last_error: s.last_error.clone(),
                }
            })
            .collect(),
        prefixes_originated: r.originations.len(),
        routes_installed: installer.installed_count(),
        restart_pending: !installer.ready(),
        problems: all_problems,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids_from_names_are_stable_and_never_zero_based() {
        let a = router_id_from_name("node-a");
        assert_eq!(a, router_id_from_name("node-a"));
        assert_ne!(a, router_id_from_name("node-b"));
        assert!(a.octets()[0] != 0);
    }

    fn desired(addr: &str, asn: u32) -> DesiredPeer {
        DesiredPeer {
            addr: addr.parse().unwrap(),
            port: 179,
            asn,
            kind: super::super::peers::PeerKind::Global,
            source: "BGPPeer tor".into(),
            passive: false,
            rr_client: false,
            keep_next_hop: true,
            local_addr: None,
            hold_time: Some(30),
            keepalive: Some(10),
            restart_time: Some(60),
            password: None,
            ttl_security: None,
            allow_local_as: 1,
        }
    }

    #[test]
    fn peer_configs_carry_password_ttl_and_timers() {
        let subnets = ["10.0.0.0/24".parse().unwrap()];
        let on_link = peer_config(&desired("10.0.0.254", 65000), 64512, &subnets).unwrap();
        assert_eq!(
            on_link.ttl,
            TtlMode::Default,
            "a directly connected eBGP peer"
        );
        assert_eq!(on_link.next_hop_mode, NextHopMode::Keep);
        assert_eq!(
            (on_link.hold_time, on_link.keepalive, on_link.restart_time),
            (Some(30), Some(10), Some(60))
        );
        assert_eq!(on_link.allow_local_as, 1);
        assert_eq!(on_link.kind, "global");
        assert_eq!(on_link.families, [Family::Ipv4Unicast].into());
        let v6 = peer_config(&desired("fd00::fe", 65000), 64512, &subnets).unwrap();
        assert_eq!(v6.families, [Family::Ipv6Unicast].into());
        let far = peer_config(&desired("192.0.2.1", 65000), 64512, &subnets).unwrap();
        assert_eq!(far.ttl, TtlMode::Multihop(64), "eBGP beyond our subnet");
        let ibgp = peer_config(&desired("192.0.2.1", 64512), 64512, &subnets).unwrap();
        assert_eq!(ibgp.ttl, TtlMode::Default);
        let mut gtsm = desired("10.0.0.254", 65000);
        gtsm.ttl_security = Some(1);
        assert_eq!(
            peer_config(&gtsm, 64512, &subnets).unwrap().ttl,
            TtlMode::Security { hops: 1 }
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "md5-secret\n").unwrap();
        let mut with_pw = desired("10.0.0.254", 65000);
        with_pw.password = Some(BgpPassword {
            file: Some(f.display().to_string()),
            env: None,
        });
        let pc = peer_config(&with_pw, 64512, &subnets).unwrap();
        assert_eq!(pc.password.as_deref(), Some("md5-secret"));
        with_pw.password = Some(BgpPassword {
            file: Some("/nonexistent/pw".into()),
            env: None,
        });
        let e = peer_config(&with_pw, 64512, &subnets).unwrap_err();
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn passwords_come_from_env_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let from_file = BgpPassword {
            file: Some(f.display().to_string()),
            env: None,
        };
        assert_eq!(read_password(&from_file).unwrap(), "s3cret");
        let missing = BgpPassword {
            file: Some("/nonexistent/trellis-pw".into()),
            env: None,
        };
        let e = read_password(&missing).unwrap_err();
        assert!(e.contains("/nonexistent/trellis-pw"), "{e}");
        let env = BgpPassword {
            file: None,
            env: Some("TRELLIS_TEST_SURELY_UNSET_PW".into()),
        };
        assert!(read_password(&env)
            .unwrap_err()
            .contains("TRELLIS_TEST_SURELY_UNSET_PW"));
    }
}
