//! Pods: a network namespace each, wired by invoking the real `trellis` CNI binary inside the
//! node's namespace with the environment and stdin a container runtime would give it.

use anyhow::{bail, Context};
use serde_json::json;

use crate::cluster::{binary, kill, spawn_daemon};
use crate::sh;
use crate::state::{LabState, PodState, NETNS_PREFIX};

fn pod_netns(lab: &str, ns: &str, pod: &str) -> String {
    format!("{NETNS_PREFIX}{lab}-p-{ns}-{pod}")
}

fn container_id(ns: &str, pod: &str) -> String {
    format!("lab-{ns}-{pod}")
}

/// Runs the CNI plugin for `command` on `pod` in its node.
fn cni(lab: &LabState, pod: &PodState, command: &str) -> anyhow::Result<serde_json::Value> {
    let node = lab.node(&pod.node)?;
    let plugin = binary(&lab.bin_dir, "trellis")?;
    let conf = json!({
        "cniVersion": "1.0.0", "name": "trellis-lab", "type": "trellis",
        "ipam": {"type": "trellis-ipam", "assign_ipv6": lab.dual_stack},
        "agent_socket": node.socket,
    });
    let env = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", pod.container_id.clone()),
        ("CNI_NETNS", format!("/run/netns/{}", pod.netns)),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
        ),
        ("CNI_PATH", lab.bin_dir.display().to_string()),
    ];
    let (ok, out, err) = sh::in_netns(
        &node.netns,
        &plugin.display().to_string(),
        &[],
        &env,
        &conf.to_string(),
    )?;
    if !ok {
        bail!(
            "trellis {command} for {}/{} on {}: {}{}",
            pod.namespace,
            pod.name,
            pod.node,
            out.trim(),
            err.trim()
        );
    }
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&out).with_context(|| format!("trellis {command} printed {out:?}"))
}

fn split(pod: &str) -> anyhow::Result<(&str, &str)> {
    pod.split_once('/')
        .ok_or_else(|| anyhow::anyhow!("pod must be NAMESPACE/NAME, got {pod:?}"))
}

pub fn add(
    lab: &mut LabState,
    node: &str,
    pod: &str,
    labels: Vec<(String, String)>,
    ports: &[String],
) -> anyhow::Result<PodState> {
    let (ns, name) = split(pod)?;
    lab.node(node)?;
    if lab.pod(ns, name).is_ok() {
        bail!("pod {pod} already exists in lab {}", lab.name);
    }
    let netns = pod_netns(&lab.name, ns, name);
    sh::run("ip", &["netns", "add", &netns])?;
    sh::ip(&netns, &["link", "set", "lo", "up"])?;
    let mut p = PodState {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        netns: netns.clone(),
        container_id: container_id(ns, name),
        ips: Vec::new(),
        labels,
        server_pid: 0,
    };
    match cni(lab, &p, "ADD") {
        Ok(result) => {
            p.ips = result["ips"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|ip| ip["address"].as_str())
                        .map(|a| a.split('/').next().unwrap_or(a).to_string())
                        .collect()
                })
                .unwrap_or_default();
        }
        Err(e) => {
            let _ = sh::run("ip", &["netns", "del", &netns]);
            return Err(e);
        }
    }
    // The orchestrator's part: the pod's labels and named container ports on its workload
    // endpoint, where policy selectors and named ports look. A failure leaves no half-labelled
    // pod behind.
    let mut steps: Vec<(&str, Vec<String>)> = Vec::new();
    if !p.labels.is_empty() {
        let kvs = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        steps.push(("label", kvs));
    }
    if !ports.is_empty() {
        steps.push(("ports", ports.to_vec()));
    }
    for (command, items) in steps {
        if let Err(e) = ctl_pod(lab, &p, command, &items) {
            let _ = cni(lab, &p, "DEL");
            let _ = sh::run("ip", &["netns", "del", &netns]);
            return Err(e);
        }
    }
    lab.pods.push(p.clone());
    lab.save()?;
    Ok(p)
}

/// `trellisctl COMMAND pod NS/POD ITEMS...` (`label` k=v..., `ports` NAME=PORT/PROTO...) against
/// the lab's datastore.
fn ctl_pod(lab: &LabState, p: &PodState, command: &str, items: &[String]) -> anyhow::Result<()> {
    let ctl = crate::cluster::binary(&lab.bin_dir, "trellisctl")?;
    let pod = format!("{}/{}", p.namespace, p.name);
    let mut args = vec![
        "netns",
        "exec",
        lab.underlay_netns.as_str(),
        ctl.to_str().unwrap_or("trellisctl"),
        "--etcd-endpoints",
        "http://127.0.0.1:2379",
        command,
        "pod",
        pod.as_str(),
    ];
    args.extend(items.iter().map(String::as_str));
    sh::run("ip", &args).map(|_| ())
}

pub fn del(lab: &mut LabState, pod: &str) -> anyhow::Result<()> {
    let (ns, name) = split(pod)?;
    let p = lab.pod(ns, name)?.clone();
    kill(p.server_pid);
    cni(lab, &p, "DEL")?;
    sh::run("ip", &["netns", "del", &p.netns])?;
    lab.pods.retain(|x| !(x.namespace == ns && x.name == name));
    lab.save()
}

pub fn netns_of(lab: &LabState, pod: &str) -> anyhow::Result<String> {
    let (ns, name) = split(pod)?;
    Ok(lab.pod(ns, name)?.netns.clone())
}

/// The ports `pod serve` serves.
#[derive(Debug, Clone, Default)]
pub struct ServePorts {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    pub sctp: Vec<u16>,
}

fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `trellis-lab probe serve --name NS/POD` in the pod as a daemon (killed by `pod del`,
/// `down` and `cleanup`), replacing one already running; returns what it printed up to
/// [`crate::probe::READY`]: a line per port, including SCTP ports the kernel cannot serve.
pub fn serve(lab: &mut LabState, pod: &str, ports: &ServePorts) -> anyhow::Result<String> {
    let (ns, name) = split(pod)?;
    let p = lab.pod(ns, name)?.clone();
    if p.server_pid != 0 {
        // The old server must let go of its ports before the new one binds them.
        kill(p.server_pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while alive(p.server_pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let log = crate::state::dir(&lab.name).join(format!("serve-{ns}-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let mut args = vec![
        "probe".to_string(),
        "serve".into(),
        "--name".into(),
        pod.into(),
    ];
    for (flag, list) in [
        ("--tcp", &ports.tcp),
        ("--udp", &ports.udp),
        ("--sctp", &ports.sctp),
    ] {
        if !list.is_empty() {
            args.extend([flag.to_string(), port_list(list)]);
        }
    }
    let exe = std::env::current_exe().context("locating trellis-lab")?;
    let pid = spawn_daemon(&p.netns, &exe, &args, &log)?;
    if let Some(p) = lab
        .pods
        .iter_mut()
        .find(|x| x.namespace == ns && x.name == name)
    {
        p.server_pid = pid;
    }
    lab.save()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(head) = out
            .lines()
            .position(|l| l == crate::probe::READY)
            .map(|n| out.lines().take(n).collect::<Vec<_>>())
        {
            return Ok(head.iter().map(|l| format!("{pod} {l}\n")).collect());
        }
        // Exited early: a port taken, say.
        if !alive(pid) || std::time::Instant::now() > deadline {
            bail!(
                "probe server in {pod} not ready ({}): {}",
                log.display(),
                out.trim()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (exists and is not a zombie: a server that exited before this
/// command reaped it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}
