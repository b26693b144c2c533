//! A trellis speaker inside a test namespace, for the interop tests.

use std::time::Duration;

use ipnet::IpNet;
use trellis_bgp_speaker::family::Family;
use trellis_bgp_speaker::install::{install, kernel_route, InstallConfig};
use trellis_bgp_speaker::kernel::{KernelSync, KernelSyncConfig, RtNetlinkTable};
use trellis_bgp_speaker::speaker::{PeerConfig, PeerStatus, RibEntry, Speaker, SpeakerConfig};

use super::{ip, Ns};

const T: Duration = Duration::from_secs(20);

/// A peer of the trellis speaker carrying the family of its address, hold time 9 s.
pub fn trellis_peer(addr: &str, asn: u32) -> PeerConfig {
    let a = ip(addr);
    let mut p = PeerConfig::new(a, asn);
    p.families = [if a.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }]
    .into();
    p.hold_time = Some(9);
    p
}

/// A trellis speaker running inside `ns` on its own thread (sockets and netlink are per
/// namespace), with kernel installation on.
pub struct TrellisNode {
    speaker: Option<Speaker>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TrellisNode {
    pub fn start(ns: &Ns, cfg: SpeakerConfig) -> TrellisNode {
        let path = format!("/var/run/netns/{}", ns.name());
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (speaker, routes) = Speaker::start(cfg).await.expect("speaker starts");
                let table = RtNetlinkTable::connect().expect("netlink");
                let sync = KernelSync::new(KernelSyncConfig::default()).unwrap();
                handle_tx.send(speaker).unwrap();
                let installer = tokio::spawn(async move {
                    install(routes, sync, &table, InstallConfig::default(), kernel_route).await
                });
                // Park until the test is done, polling the std channel.
                while stop_rx.try_recv().is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                installer.abort();
            });
        });
        let speaker = handle_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("speaker handle");
        TrellisNode {
            speaker: Some(speaker),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn speaker(&self) -> &Speaker {
        self.speaker.as_ref().unwrap()
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        futures::executor::block_on(self.speaker().status()).unwrap()
    }

    pub fn routes(&self) -> Vec<RibEntry> {
        futures::executor::block_on(self.speaker().routes()).unwrap()
    }

    pub fn wait_routes(&self, prefixes: &[IpNet], what: &str) {
        let found = super::wait_until(T, || {
            let r = self.routes();
            prefixes
                .iter()
                .all(|p| r.iter().any(|e| e.prefix == *p && !e.local))
        });
        if !found {
            let status = self.status();
            panic!(
                "{what}: trellis has {:#?}\nsessions {status:#?}",
                self.routes()
            );
        }
    }
}

impl Drop for TrellisNode {
    fn drop(&mut self) {
        if let Some(s) = self.speaker.take() {
            futures::executor::block_on(s.stop());
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
