//! `trellis-lab`: a Trellis cluster in a box. Nodes and pods are network namespaces on this
//! machine, connected through an underlay namespace that also runs etcd. Nothing outside the
//! lab's own namespaces (`tl-NAME-*`) is touched.

mod aws;
mod cluster;
mod pods;
mod probe;
mod rr;
mod sh;
mod state;
mod tor;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::state::LabState;

#[derive(Debug, Parser)]
#[command(
    name = "trellis-lab",
    version,
    about = "A Trellis cluster in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a lab: underlay, etcd, NODES nodes each running trellis-agent, default pools.
    Up {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// L2 segments of the underlay (1 or 2); with 2, the underlay namespace routes between
        /// them and the nodes are split over them in order.
        #[arg(long, default_value_t = 1)]
        subnets: usize,
        /// How pods on different nodes reach each other (the default pools' vxlanMode or
        /// ipipMode). The ipip modes need the kernel's ipip module and are refused, before
        /// anything is created, on a kernel without it.
        #[arg(long, value_enum, default_value_t = cluster::Encap::Vxlan)]
        encap: cluster::Encap,
        /// An IPv6 pool too: every pod gets one address of each family.
        #[arg(long)]
        dual_stack: bool,
        /// Agents run their BGP speaker (`trellis-agent --bgp`): a node-to-node mesh on one
        /// subnet (or a route reflector's clients, with --route-reflector); with --subnets 2 the router between the subnets runs BIRD as a top-of-rack
        /// router peering with every node (needed for --encap none across subnets).
        #[arg(long)]
        bgp: bool,
        /// With --bgp on one subnet and --encap none: the underlay namespace runs a route
        /// reflector (trellis-bgp or BIRD, AS 64512) and every node peers with it alone,
        /// instead of the node-to-node mesh.
        #[arg(long, value_enum)]
        route_reflector: Option<rr::Reflector>,
        /// Agents do not enforce NetworkPolicy (`trellis-agent --no-policy`). By default they
        /// do: label pods with `pod add --labels`, add Namespace and NetworkPolicy objects with
        /// `ctl -- apply`.
        #[arg(long, overrides_with = "policy")]
        no_policy: bool,
        /// Agents enforce NetworkPolicy (the default; overrides an earlier --no-policy).
        #[arg(long, overrides_with = "no_policy")]
        policy: bool,
        /// Where trellis, trellis-agent and trellisctl are (default: next to trellis-lab).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Where pods get addresses: the IP pools (overlay), or ENIs of an emulated AWS VPC
        /// (moto as EC2, an IMDS per node, a VPC router namespace, agents `--backend vpc`).
        #[arg(long, value_enum, default_value = "overlay")]
        backend: cluster::Backend,
        /// The nodes' EC2 instance type (--backend vpc); its ENI and address limits apply.
        #[arg(long, default_value = "t3.small")]
        instance_type: String,
    },
    /// Run a command on the VPC lab's test host outside the VPC (203.0.113.10):
    /// `trellis-lab outside NAME -- python3 -m http.server 80`.
    Outside {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// The VPC lab's EC2 hypervisor (started by `up --backend vpc` in the router namespace).
    #[command(hide = true)]
    VpcHypervisor {
        name: String,
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        instance_type: String,
    },
    /// Tear a lab down.
    Down { name: String },
    /// Remove the leftovers of every lab (after a crash).
    Cleanup,
    /// Nodes, pods and the datastore endpoint.
    Status { name: String },
    /// Pods.
    Pod {
        #[command(subcommand)]
        command: PodCmd,
    },
    /// Nodes.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Ask the lab's BIRD (the ToR router of a `--bgp --subnets 2` lab, or the route reflector
    /// of a `--route-reflector bird` one): `trellis-lab birdc NAME -- show route`.
    Birdc {
        name: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Run trellisctl against the lab's datastore: `trellis-lab ctl NAME -- get ippools`.
    Ctl {
        name: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Connectivity probes, run inside a pod (`trellis-lab pod exec NAME NS/POD -- trellis-lab
    /// probe connect ...`); `pod serve` starts `probe serve` in a pod for the lab's life.
    Probe {
        #[command(subcommand)]
        command: probe::ProbeCmd,
    },
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create NS/POD on NODE and wire it with the trellis CNI plugin.
    Add {
        name: String,
        node: String,
        pod: String,
        /// k=v,k=v
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Named container ports, NAME=PORT[/PROTO],... (`trellisctl ports pod`), what
        /// NetworkPolicy named ports resolve against.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<String>,
    },
    Del {
        name: String,
        pod: String,
    },
    /// Start `trellis-lab probe serve` in a pod, in the background until `pod del` or `down`
    /// (replacing one already running); prints what it serves (and an SCTP port it cannot).
    Serve {
        name: String,
        pod: String,
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        sctp: Vec<u16>,
    },
    /// Run a command in a pod: `trellis-lab pod exec NAME NS/POD -- ping -c1 10.244.1.2`.
    Exec {
        name: String,
        pod: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Kill the node's agent (--hard: SIGKILL, as a crash) and start it again.
    Restart {
        name: String,
        node: String,
        #[arg(long)]
        hard: bool,
    },
    Exec {
        name: String,
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

fn exec_in(netns: &str, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let status = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .status()
        .context("running ip netns exec")?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Up {
            name,
            nodes,
            subnets,
            encap,
            dual_stack,
            bgp,
            route_reflector,
            no_policy,
            policy: _,
            bin_dir,
            backend,
            instance_type,
        } => {
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("locating trellis-lab")?
                    .to_path_buf(),
            };
            let args = cluster::UpArgs {
                name: name.clone(),
                nodes,
                subnets,
                encap,
                dual_stack,
                bgp,
                route_reflector,
                policy: !no_policy,
                bin_dir,
                backend,
                instance_type,
            };
            match cluster::up(&args) {
                Ok(lab) => print!("{}", status(&lab)),
                Err(e) => {
                    // Leave nothing half-built behind.
                    if let Ok(lab) = LabState::load(&name) {
                        let _ = cluster::down(&lab);
                    }
                    return Err(e);
                }
            }
        }
        Cmd::Down { name } => cluster::down(&LabState::load(&name)?)?,
        Cmd::Cleanup => println!("removed {} namespaces", cluster::cleanup()?),
        Cmd::Status { name } => print!("{}", status(&LabState::load(&name)?)),
        Cmd::Pod { command } => match command {
            PodCmd::Add {
                name,
                node,
                pod,
                labels,
                ports,
            } => {
                let mut lab = LabState::load(&name)?;
                let labels = labels
                    .iter()
                    .map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| anyhow::anyhow!("label {kv:?} is not k=v"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let p = pods::add(&mut lab, &node, &pod, labels, &ports)?;
                println!(
                    "{}/{} on {}: {}",
                    p.namespace,
                    p.name,
                    p.node,
                    p.ips.join(" ")
                );
            }
            PodCmd::Del { name, pod } => pods::del(&mut LabState::load(&name)?, &pod)?,
            PodCmd::Serve {
                name,
                pod,
                tcp,
                udp,
                sctp,
            } => {
                let ports = pods::ServePorts { tcp, udp, sctp };
                print!(
                    "{}",
                    pods::serve(&mut LabState::load(&name)?, &pod, &ports)?
                );
            }
            PodCmd::Exec { name, pod, cmd } => {
                return exec_in(&pods::netns_of(&LabState::load(&name)?, &pod)?, &cmd)
            }
        },
        Cmd::Node {
            command: NodeCmd::Restart { name, node, hard },
        } => {
            cluster::restart_agent(&mut LabState::load(&name)?, &node, hard)?;
        }
        Cmd::Node {
            command: NodeCmd::Exec { name, node, cmd },
        } => {
            let lab = LabState::load(&name)?;
            return exec_in(&lab.node(&node)?.netns, &cmd);
        }
        Cmd::Birdc { name, args } => {
            let lab = LabState::load(&name)?;
            if lab.bird_pid == 0 {
                anyhow::bail!(
                    "lab {name} runs no BIRD (it does with --bgp --subnets 2 or --route-reflector bird)"
                );
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            print!("{}", cluster::birdc(&state::dir(&name), &args)?);
        }
        Cmd::Ctl { name, args } => {
            let lab = LabState::load(&name)?;
            let ctl = cluster::binary(&lab.bin_dir, "trellisctl")?;
            let mut cmd = vec![
                ctl.display().to_string(),
                "--etcd-endpoints".into(),
                "http://127.0.0.1:2379".into(),
            ];
            cmd.extend(args);
            return exec_in(&lab.underlay_netns, &cmd);
        }
        Cmd::Probe { command } => return probe::run(command),
        Cmd::Outside { name, cmd } => {
            let lab = LabState::load(&name)?;
            let Some(v) = &lab.vpc else {
                anyhow::bail!("lab {name} has no VPC: the outside host is part of --backend vpc");
            };
            return exec_in(&v.outside_netns, &cmd);
        }
        Cmd::VpcHypervisor {
            name,
            nodes,
            instance_type,
        } => aws::hypervisor::run(&name, nodes, &instance_type, &state::dir(&name))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn status(lab: &LabState) -> String {
    let mut out = format!(
        "lab {}: datastore {} (from the lab's namespaces), {} subnet(s), pools vxlanMode {} ipipMode {}\n",
        lab.name,
        lab.etcd_endpoint,
        lab.subnets,
        lab.encap.vxlan_mode(),
        lab.encap.ipip_mode()
    );
    if lab.bgp {
        out.push_str(match lab.reflector {
            Some(r) => match r {
                rr::Reflector::Bird => "bgp: agents are clients of the route reflector (BIRD, AS 64512, on the underlay; trellis-lab birdc NAME -- show protocols)\n",
                rr::Reflector::Trellis => "bgp: agents are clients of the route reflector (trellis-bgp, AS 64512, on the underlay; its sessions in trellis-bgp.log of the lab's state dir)\n",
            },
            None if lab.bird_pid != 0 => "bgp: agents peer with the ToR router (BIRD, AS 65000; trellis-lab birdc NAME -- show route)\n",
            None => "bgp: agents run the node-to-node mesh (AS 64512)\n",
        });
    }
    out.push_str(&aws::status(lab));
    for n in &lab.nodes {
        out.push_str(&format!(
            "node {:<8} {:<12} {:<20} netns {}\n",
            n.name, n.ip, n.ip6, n.netns
        ));
    }
    for p in &lab.pods {
        out.push_str(&format!(
            "pod  {}/{} on {}: {}\n",
            p.namespace,
            p.name,
            p.node,
            p.ips.join(" ")
        ));
    }
    out
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trellis-lab: {}", format!("{e:#}").replace('\n', "\n  "));
            ExitCode::FAILURE
        }
    }
}
