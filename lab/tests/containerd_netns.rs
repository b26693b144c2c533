//! The real CNI client path: Debian's containerd, run inside a lab node's network namespace,
//! starts a busybox container with `ctr run --cni` through a conflist that chains `trellis` with
//! Debian's `portmap`. The container gets its address, reaches a pod on another node, and the
//! host port answers. Needs root and the containerd, runc, busybox-static,
//! containernetworking-plugins and iptables Debian packages.
//!
//! Nothing outside the lab's namespaces and this test's temporary directory is changed:
//! containerd runs in the node netns with its own root, state, socket and config; `ctr` (which
//! reads its CNI config only from /etc/cni/net.d and plugins only from /opt/cni/bin) runs in a
//! private mount namespace where /etc, /opt and /var/lib (libcni's result cache) are overlays
//! whose upper layers live in the temporary directory.
//!
//! `ctr run` has no flag for port mappings, so the portmap entry of the conflist carries a static
//! `runtimeConfig.portMappings` (libcni only replaces runtimeConfig when the runtime passes
//! capability arguments, which ctr never does): go-cni still calls portmap with trellis's result
//! as `prevResult`, as containerd's CRI plugin would. `ctr run -d` never calls DEL, so the test
//! calls DEL itself in libcni's order (portmap, then trellis) with the cached result.

mod lab_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::{bin_dir, lab, ok, require_root_and_binaries, Lab};

const IMAGE: &str = "docker.io/library/trellis-busybox:test";
const CONTAINER: &str = "web";
const HOST_PORT: u16 = 18080;
const NET_NAME: &str = "trellis-ctr";

/// The containerd namespace: per run, so parallel runs never share a shim socket or runc state.
fn ctr_ns() -> String {
    format!("trellis-{}", std::process::id())
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn require_root_and_tools() {
    require_root_and_binaries("the lab creates network namespaces and runs containerd");
    for cmd in [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "iptables",
        "nsenter",
        "unshare",
        "tar",
        "sha256sum",
    ] {
        assert!(
            on_path(cmd),
            "{cmd} not found: apt-get install -y containerd runc busybox-static iptables \
             containernetworking-plugins util-linux"
        );
    }
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing: apt-get install -y busybox-static"
    );
    assert!(
        Path::new("/usr/lib/cni/portmap").is_file(),
        "/usr/lib/cni/portmap missing: apt-get install -y containernetworking-plugins"
    );
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha256(path: &Path) -> String {
    let (ok, out) = run(Command::new("sha256sum").arg(path));
    assert!(ok, "sha256sum {}: {out}", path.display());
    out.split_whitespace().next().unwrap().to_string()
}

/// Writes `bytes` as a blob of the OCI layout and returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&digest)).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len()})
}

/// A one-layer busybox image as an OCI layout tarball: no registry is reachable here.
fn build_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "www", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "ip", "ping", "sleep", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("www/index.html"), "trellis-portmap-ok\n").unwrap();

    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer_tar = dir.join("layer.tar");
    let (tar_ok, out) = run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("."));
    assert!(tar_ok, "tar rootfs: {out}");
    let layer = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        &std::fs::read(&layer_tar).unwrap(),
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    });
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer],
    });
    let mut manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    manifest["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "test"});
    manifest["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [manifest]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let image = dir.join("image.tar");
    let (tar_ok, out) = run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&image)
        .args(["oci-layout", "index.json", "blobs"]));
    assert!(tar_ok, "tar layout: {out}");
    image
}

/// containerd inside a node netns, everything it owns under `dir`.
struct Containerd {
    dir: PathBuf,
    netns: String,
    child: Option<Child>,
    created_run_dirs: Vec<PathBuf>,
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn start(dir: &Path, netns: &str) -> Containerd {
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let created_run_dirs: Vec<PathBuf> = [
            "/run/containerd".to_string(),
            "/run/containerd/s".to_string(),
            "/run/containerd/runc".to_string(),
            format!("/run/containerd/runc/{}", ctr_ns()),
        ]
        .into_iter()
        .map(PathBuf::from)
        .filter(|d| !d.exists())
        .collect();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let c = Containerd {
            dir: dir.to_path_buf(),
            netns: netns.to_string(),
            child: Some(child),
            created_run_dirs,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if c.sock().exists() && c.ctr(&["version"]).0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr_cmd(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("ctr")
            .arg("-a")
            .arg(self.sock())
            .args(["-n", &ctr_ns()])
            .env("CONTAINERD_SNAPSHOTTER", "native");
        cmd
    }

    fn ctr(&self, args: &[&str]) -> (bool, String) {
        run(self.ctr_cmd().args(args))
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctr(args);
        assert!(ok, "ctr {args:?}: {out}");
        out
    }

    /// `ctr run --cni`: in a private mount namespace where /etc/cni/net.d and /opt/cni/bin come
    /// from overlays whose upper layers are under `dir` (the host's dirs are never written).
    fn run_cni(&self, args: &[&str]) -> (bool, String) {
        let d = self.dir.display().to_string();
        let mut script = String::from("set -e\n");
        for (lower, name) in [("/etc", "etc"), ("/opt", "opt-cni"), ("/var/lib", "varlib")] {
            script.push_str(&format!(
                "mkdir -p {d}/{name}-up {d}/{name}-work\n\
                 mount -t overlay overlay -o lowerdir={lower},upperdir={d}/{name}-up,workdir={d}/{name}-work {lower}\n"
            ));
        }
        script.push_str(&format!(
            "exec ctr -a {d}/containerd.sock -n {} run --cni --runc-root {d}/runc \"$@\"\n",
            ctr_ns()
        ));
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .args(args)
            .env("CONTAINERD_SNAPSHOTTER", "native"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", CONTAINER]);
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.ctr(&["task", "rm", "-f", CONTAINER]);
        let _ = self.ctr(&["container", "rm", CONTAINER]);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything still mounted under our directory (a container rootfs after a failure).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = run(Command::new("umount").args(["-l", m]));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The runc shim puts its socket under /run/containerd/s and runc's state under
        // /run/containerd/runc/NS whatever containerd's --state is: remove what this test
        // created, once empty.
        for d in self.created_run_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Runs one plugin of the conflist by hand, as libcni does.
fn plugin(
    netns: &str,
    bin: &Path,
    plugin_conf: &serde_json::Value,
    env: &[(&str, &str)],
    prev: Option<&serde_json::Value>,
) -> (bool, String) {
    let mut conf = plugin_conf.clone();
    conf["cniVersion"] = "1.0.0".into();
    conf["name"] = NET_NAME.into();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(bin.join(plugin_conf["type"].as_str().unwrap()))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn containerd_runs_a_container_through_trellis_chained_with_portmap() {
    let started = Instant::now();
    require_root_and_tools();
    let name = format!("c{}", std::process::id() % 100_000);
    let _lab = Lab(name.clone());
    ok(&["up", "--name", &name, "--nodes", "2"]);
    let out = ok(&["pod", "add", &name, "node-2", "default/target"]);
    let target = out
        .split_whitespace()
        .find(|w| w.starts_with("10.244."))
        .unwrap_or_else(|| panic!("no IPv4 in {out}"))
        .to_string();

    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/trellis-lab/{name}/state.json")).unwrap(),
    )
    .unwrap();
    let node1 = &state["nodes"][0];
    let netns1 = node1["netns"].as_str().unwrap().to_string();
    let node1_ip = node1["ip"].as_str().unwrap().to_string();
    let socket = node1["socket"].as_str().unwrap().to_string();

    let dir = std::env::temp_dir().join(format!("trellis-ctr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Plugins and conflist in the overlays' upper layers: /opt/cni/bin and /etc/cni/net.d
    // as ctr sees them.
    let cni_bin = dir.join("opt-cni-up/cni/bin");
    let conf_dir = dir.join("etc-up/cni/net.d");
    std::fs::create_dir_all(&cni_bin).unwrap();
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::copy(bin_dir().join("trellis"), cni_bin.join("trellis")).unwrap();
    std::fs::copy("/usr/lib/cni/portmap", cni_bin.join("portmap")).unwrap();
    let trellis_conf = serde_json::json!({
        "type": "trellis", "ipam": {"type": "trellis-ipam"}, "agent_socket": socket,
    });
    let portmap_conf = serde_json::json!({
        "type": "portmap", "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": 8080, "protocol": "tcp"}
        ]},
    });
    std::fs::write(
        conf_dir.join("10-trellis.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0", "name": NET_NAME,
            "plugins": [trellis_conf, portmap_conf],
        })
        .to_string(),
    )
    .unwrap();

    let image = build_image(&dir);
    let containerd = Containerd::start(&dir, &netns1);
    containerd.ctr_ok(&[
        "image",
        "import",
        "--base-name",
        "docker.io/library/trellis-busybox",
        image.to_str().unwrap(),
    ]);
    let images = containerd.ctr_ok(&["image", "ls", "-q"]);
    assert!(images.contains(IMAGE), "image not imported: {images}");

    let fifo = dir.join("fifo");
    let log_uri = format!("file://{}", dir.join("httpd.log").display());
    let (ran, out) = containerd.run_cni(&[
        "-d",
        "--fifo-dir",
        fifo.to_str().unwrap(),
        "--log-uri",
        &log_uri,
        IMAGE,
        CONTAINER,
        "/bin/httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    assert!(
        ran,
        "ctr run --cni: {out}\ncontainerd log:\n{}",
        std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
    );

    let exec = |id: &str, cmd: &[&str]| -> (bool, String) {
        let mut args = vec![
            "task",
            "exec",
            "--fifo-dir",
            fifo.to_str().unwrap(),
            "--exec-id",
            id,
            CONTAINER,
        ];
        args.extend_from_slice(cmd);
        containerd.ctr(&args)
    };
    let (addr_ok, addrs) = exec("addr", &["ip", "-4", "addr", "show", "eth0"]);
    assert!(
        addr_ok && addrs.contains("inet 10.244."),
        "the container has no 10.244.x address on eth0: {addrs}"
    );
    let wep = ok(&["ctl", &name, "--", "get", "wep", "-A"]);
    let container_ip = addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_string();
    assert!(
        wep.contains(&container_ip),
        "no WorkloadEndpoint for {container_ip}: {wep}"
    );

    let (reached, out) = exec("ping", &["ping", "-c1", "-W2", &target]);
    assert!(
        reached,
        "the container cannot reach default/target ({target}) on node-2: {out}"
    );

    // The host port, from node-1 itself (OUTPUT) and from node-2 over the underlay (PREROUTING).
    let url = format!("http://{node1_ip}:{HOST_PORT}/");
    let http_get = format!(
        "exec 3<>/dev/tcp/{node1_ip}/{HOST_PORT} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    for node in ["node-1", "node-2"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            // bash's /dev/tcp: busybox-static's wget segfaults on this machine.
            let answer = lab(&[
                "node", "exec", &name, node, "--", "timeout", "2", "bash", "-c", &http_get,
            ]);
            if (answer.0 && answer.1.contains("trellis-portmap-ok")) || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !(answer.0 && answer.1.contains("trellis-portmap-ok")) {
            let (_, nat) = lab(&[
                "node",
                "exec",
                &name,
                "node-1",
                "--",
                "iptables-save",
                "-c",
                "-t",
                "nat",
            ]);
            let (_, direct) = exec(
                "direct",
                &[
                    "sh",
                    "-c",
                    "echo | nc -w1 127.0.0.1 8080 >/dev/null; echo nc=$?",
                ],
            );
            panic!(
                "{url} from {node} (portmap hostPort {HOST_PORT} -> {container_ip}:8080), \
                 {tries} tries: {}\nnode-1 nat table:\n{nat}\nin the container: {direct}\nhttpd log: {}",
                answer.1,
                std::fs::read_to_string(dir.join("httpd.log")).unwrap_or_default()
            );
        }
    }

    // Stop the container; `ctr run -d` never calls DEL, so do it as libcni would: the conflist's
    // plugins in reverse order, with the cached ADD result as prevResult and no netns.
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", CONTAINER]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containerd.ctr(&["task", "rm", CONTAINER]).0 {
        assert!(Instant::now() < deadline, "task {CONTAINER} did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    containerd.ctr_ok(&["container", "rm", CONTAINER]);
    let container_id = format!("{}-{CONTAINER}", ctr_ns());
    let cache = dir
        .join("varlib-up/cni/results")
        .join(format!("{NET_NAME}-{container_id}-eth0"));
    let cached: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cache)
            .unwrap_or_else(|e| panic!("libcni's result cache {}: {e}", cache.display())),
    )
    .unwrap();
    let prev = &cached["result"];
    let cni_path = cni_bin.display().to_string();
    let env = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", container_id.as_str()),
        ("CNI_NETNS", ""),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", cni_path.as_str()),
    ];
    for conf in [&portmap_conf, &trellis_conf] {
        let (deleted, out) = plugin(&netns1, &cni_bin, conf, &env, Some(prev));
        assert!(deleted, "{} DEL: {out}", conf["type"]);
    }
    let (_, rules) = lab(&["node", "exec", &name, "node-1", "--", "iptables-save"]);
    assert!(
        !rules.contains(&format!("--dport {HOST_PORT}")),
        "portmap DEL left its DNAT rule: {rules}"
    );
    let wep = ok(&["ctl", &name, "--", "get", "wep", "-A"]);
    assert!(
        !wep.contains(&container_ip),
        "the WorkloadEndpoint survived DEL: {wep}"
    );
    let check = ok(&["ctl", &name, "--", "ipam", "check"]);
    assert!(
        check.contains("leaked addresses: 0") && check.contains("addresses allocated twice: 0"),
        "{check}"
    );
    drop(containerd);
    eprintln!("containerd e2e took {:?}", started.elapsed());
}
