//! The BGP loop: datastore -> plan -> speaker and installer; speaker -> installer -> kernel.
//! See the module documentation of [`super`] for the picture.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::StreamExt;
use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use trellis_agent_api::{BgpPeerStatus, BgpStatus};
use trellis_bgp_speaker::kernel::{KernelSync, KernelSyncConfig, RouteTable, RtNetlinkTable};
use trellis_bgp_speaker::speaker::{
    GracefulRestart, LocalRoute, PeerConfig, PeerStatus, RouteEvent, Speaker, SpeakerConfig,
};
use trellis_datastore::Datastore;

use super::installer::Installer;
use super::peer_config::peer_config;
use super::peers::DesiredPeer;
pub use super::plan::BgpAgentConfig;
use super::plan::{plan, Plan, Settings, PREFIXES};
use super::BgpStatusCell;
use crate::watch_cache::WatchCache;

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
    let mut cache = WatchCache::new(&PREFIXES);
    let mut events = cache.watch(ds.clone());
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
