//! A private etcd server for integration tests and benchmarks (cargo feature `testing`).
//!
//! `EtcdServer::start()` runs `/usr/bin/etcd` (or `$TRELLIS_ETCD_BIN`) on two free loopback
//! ports with a temporary data dir, fsync left on so benchmarks measure real commits. Tests can
//! share one server ([`EtcdServer::shared`]) and stay apart by key prefix
//! ([`EtcdServer::datastore`] hands out a unique one); tests that stop the server or compact
//! it should start their own, since both affect every user of the server.
//!
//! Helpers panic with a message saying what to fix: they are test fixtures, not library code.
//! Cleanup is guaranteed even when the test binary never drops the server (a `static`): a small
//! `sh` reaper, fed the etcd pid on a pipe, kills etcd and removes the data dir when the pipe
//! closes, which happens however this process exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::Result;
use crate::etcd::{EtcdConfig, EtcdDatastore};

const DEFAULT_BIN: &str = "/usr/bin/etcd";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Kills etcd and removes the data dir once stdin closes; a line sets the pid to kill (0: none).
const REAPER_SCRIPT: &str = r#"pid=0
while read -r line; do pid=$line; done
[ "$pid" != 0 ] && kill -9 "$pid" 2>/dev/null
rm -rf "$1""#;

/// A running etcd, killed (and its data dir removed) on drop.
#[derive(Debug)]
pub struct EtcdServer {
    bin: PathBuf,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    etcd: Option<Child>,
    reaper: Child,
    reaper_stdin: Option<ChildStdin>,
}

impl EtcdServer {
    /// Starts a fresh server and waits until it answers. Blocking; fine to call from a test's
    /// async body (it only delays that test).
    pub fn start() -> EtcdServer {
        let bin = std::env::var_os("TRELLIS_ETCD_BIN")
            .map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
        if !bin.exists() {
            panic!(
                "etcd binary {} not found: run scripts/test.sh (it apt-installs etcd-server) \
                 or set TRELLIS_ETCD_BIN",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("trellis-etcd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary dir for etcd: {e}"));
        let mut reaper = Command::new("sh")
            .args(["-c", REAPER_SCRIPT, "trellis-etcd-reaper"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn sh for the etcd reaper: {e}"));
        let reaper_stdin = reaper.stdin.take();
        let (client_port, peer_port) = free_ports();
        let server = EtcdServer {
            bin,
            client_port,
            peer_port,
            dir,
            state: Mutex::new(State {
                etcd: None,
                reaper,
                reaper_stdin,
            }),
        };
        server.launch();
        server
    }

    /// One server for the whole test binary, started on first use and cleaned up by the
    /// reaper when the process exits.
    pub fn shared() -> &'static EtcdServer {
        static SHARED: OnceLock<EtcdServer> = OnceLock::new();
        SHARED.get_or_init(EtcdServer::start)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A config for this server under a prefix no other caller gets (`/trellis-test/N-NAME/`),
    /// with short timeouts so outage tests finish quickly.
    pub fn config(&self, name: &str) -> EtcdConfig {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut config = EtcdConfig::new(vec![self.endpoint()])
            .with_prefix(format!("/trellis-test/{}-{n}-{name}/", std::process::id()));
        config.connect_timeout = Duration::from_secs(1);
        config.request_timeout = Duration::from_secs(2);
        config
    }

    /// A connected datastore under a unique prefix (see [`EtcdServer::config`]).
    pub async fn datastore(&self, name: &str) -> EtcdDatastore {
        let config = self.config(name);
        EtcdDatastore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test etcd at {}: {e}", self.endpoint()))
    }

    /// Compacts the server's history up to `revision` (all prefixes: etcd compaction is global).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.datastore("compact").await.compact(revision).await
    }

    /// Kills etcd (as a crash would; committed data is on disk). Idempotent.
    pub fn stop(&self) {
        let mut st = self.lock();
        if let Some(mut etcd) = st.etcd.take() {
            // Errors mean it already exited, which is what we want.
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
        tell_reaper(&mut st, 0);
    }

    /// Starts etcd again on the same ports and data dir.
    pub fn restart(&self) {
        self.stop();
        self.launch();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.log_path().display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup etcd log handle: {e}"));
        let etcd = Command::new(&self.bin)
            .arg("--name=trellis-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=trellis-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let pid = etcd.id();
        {
            let mut st = self.lock();
            st.etcd = Some(etcd);
            tell_reaper(&mut st, pid);
        }
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        loop {
            if healthy(addr) {
                return;
            }
            let exited = self
                .lock()
                .etcd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "etcd exited ({status}) before answering:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "etcd did not answer on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let mut st = self.lock();
        // Closing the pipe lets the reaper finish (removing the dir, as TempDir also will).
        st.reaper_stdin = None;
        let _ = st.reaper.wait();
    }
}

fn tell_reaper(st: &mut State, pid: u32) {
    if let Some(stdin) = st.reaper_stdin.as_mut() {
        // If the reaper is gone, the only loss is cleanup after an abnormal exit.
        let _ = writeln!(stdin, "{pid}");
    }
}

/// Two distinct free loopback ports (both held while asking, so they differ).
fn free_ports() -> (u16, u16) {
    let bind = || {
        TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
    };
    let ((a, _la), (b, _lb)) = (bind(), bind());
    (a, b)
}

/// etcd's `/health` on the client URL says `"health":"true"` once it serves requests.
fn healthy(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    probe().is_ok_and(|body| body.contains("\"health\":\"true\""))
}
