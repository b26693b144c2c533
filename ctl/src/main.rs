//! `trellisctl`: read and write Trellis resources in the datastore and inspect IPAM.
//! Exit status 0 on success, 1 on any error (with a one-line reason on stderr).

mod apply;
mod get;
mod ipam_cmd;
mod kinds;
mod label;
mod node_status;
mod pod_endpoints;
mod policy_trace;
mod ports;
mod table;
mod vpc;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::get::{Output, Scope};
use trellis_datastore::cli::ConnectArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trellisctl",
    version,
    about = "Manage Trellis resources and IPAM"
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct NamespaceArgs {
    /// Namespace of namespaced kinds.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

impl NamespaceArgs {
    fn scope(&self) -> Scope {
        if self.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(self.namespace.clone())
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the resources in a YAML/JSON file (`-` for standard input). All or nothing.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Show resources of a kind (ippools, nodes, networkpolicies, ...).
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
    /// Delete one resource.
    Delete {
        kind: String,
        name: String,
        #[command(flatten)]
        ns: NamespaceArgs,
        /// Delete an IP pool even though addresses in it are still allocated.
        #[arg(long)]
        force: bool,
    },
    /// Set (KEY=VALUE) or remove (KEY-) labels of a pod, as policy selectors see them.
    Label {
        /// `pod`: the pod's workload endpoints.
        kind: String,
        /// NAMESPACE/POD
        name: String,
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Replace the named container ports of a pod (NAME=PORT[/PROTO], TCP by default; none
    /// clears them), what NetworkPolicy named ports resolve against.
    Ports {
        /// `pod`: the pod's workload endpoints.
        kind: String,
        /// NAMESPACE/POD
        name: String,
        ports: Vec<String>,
    },
    /// NetworkPolicy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// This node's agent and BGP sessions (from the agent's socket, not the datastore).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// IP address management.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// The VPC-native backend (pods on AWS ENI addresses).
    Vpc {
        #[command(subcommand)]
        command: vpc::VpcCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The verdict on a connection and the policy and rule that decide it, from the same
    /// compiler the agents program the kernel with.
    Trace {
        /// NAMESPACE/POD
        #[arg(long)]
        from: String,
        /// NAMESPACE/POD or an IP address
        #[arg(long)]
        to: String,
        /// PORT/PROTOCOL (80/TCP, 53/UDP) or a protocol alone (ICMP)
        #[arg(long, value_parser = policy_trace::parse_port)]
        port: (trellis_policy::Proto, u16),
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Readiness, BGP sessions (peer, type, state, since, prefixes), problems.
    Status {
        /// The agent's API socket.
        #[arg(long, env = "TRELLIS_AGENT_SOCKET", default_value = trellis_agent_api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
        /// Print the agent's status document as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// Per pool: size, allocated and free addresses.
    Show {
        /// Also list every block with its node and use.
        #[arg(long)]
        show_blocks: bool,
    },
    /// Find leaked allocations, blocks of missing nodes and addresses allocated twice.
    Check,
    /// Allocate addresses for a handle on a node, as the agent does for a pod; with --ip, those
    /// exact addresses (an operator's reservation unless --pod is given).
    Assign {
        #[arg(long)]
        node: String,
        /// Owner of the addresses, e.g. CONTAINERID.eth0.
        #[arg(long)]
        handle: String,
        #[arg(long, default_value_t = 0)]
        ipv4: usize,
        #[arg(long, default_value_t = 0)]
        ipv6: usize,
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Pod namespace/name the addresses are for.
        #[arg(long)]
        pod: Option<String>,
    },
    /// Release specific addresses.
    Release {
        #[arg(long = "ip", required = true)]
        ips: Vec<IpAddr>,
    },
    /// Release leaked addresses, affinities of deleted nodes and empty handles.
    Gc {
        /// Leaks younger than this are left alone (their pod may still be starting).
        #[arg(long, default_value = "10m", value_parser = ipam_cmd::parse_grace)]
        grace_period: Duration,
    },
}

async fn node_status(socket: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let status = trellis_agent_api::AgentClient::new(socket)
        .status()
        .await
        .with_context(|| format!("asking the agent at {}", socket.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        print!("{}", node_status::render(&status, now));
    }
    Ok(if status.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        // The node's own status comes from its agent; no datastore needed.
        Command::Node {
            command: NodeCommand::Status { socket, json },
        } => node_status(&socket, json).await,
        // Offline: from the instance-type table in trellis-vpc.
        Command::Vpc { command } => {
            print!("{}", vpc::run(&command)?);
            Ok(ExitCode::SUCCESS)
        }
        command => run_with_datastore(&cli.connect, command).await,
    }
}

async fn run_with_datastore(connect: &ConnectArgs, command: Command) -> anyhow::Result<ExitCode> {
    let cli_ds = connect.connect().await?;
    let ds = cli_ds.as_ref();
    match command {
        Command::Apply { file } => {
            let resources = apply::load(ds, &file).await?;
            let outcomes = apply::write_all(ds, &resources).await?;
            for (r, o) in resources.iter().zip(outcomes) {
                let what = match o {
                    apply::Outcome::Created => "created",
                    apply::Outcome::Configured => "configured",
                    apply::Outcome::Unchanged => "unchanged",
                };
                println!("{} {what}", r.describe());
            }
        }
        Command::Get {
            kind,
            name,
            output,
            ns,
        } => {
            let kind = kinds::resolve(&kind)?;
            print!(
                "{}",
                get::get(ds, kind, name.as_deref(), &ns.scope(), output).await?
            );
        }
        Command::Delete {
            kind,
            name,
            ns,
            force,
        } => {
            let kind = kinds::resolve(&kind)?;
            get::delete(ds, kind, &name, &ns.scope(), force).await?;
            println!("{kind} {name} deleted");
        }
        Command::Node {
            command: NodeCommand::Status { socket, json },
        } => return node_status(&socket, json).await,
        Command::Vpc { command } => print!("{}", vpc::run(&command)?),
        Command::Label {
            kind,
            name,
            changes,
        } => {
            if !matches!(kind.as_str(), "pod" | "pods" | "po") {
                anyhow::bail!("label: only pods can be labelled here, got kind {kind:?}");
            }
            let (ns, pod) = name
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("label: {name:?} is not NAMESPACE/POD"))?;
            let changes = changes
                .iter()
                .map(|c| label::parse_change(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = label::label_pod(ds, ns, pod, &changes).await?;
            println!(
                "pod {ns}/{pod} labelled ({n} endpoint{})",
                if n == 1 { "" } else { "s" }
            );
        }
        Command::Ports { kind, name, ports } => {
            if !matches!(kind.as_str(), "pod" | "pods" | "po") {
                anyhow::bail!("ports: only pods have ports here, got kind {kind:?}");
            }
            let (ns, pod) = name
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("ports: {name:?} is not NAMESPACE/POD"))?;
            let parsed = ports::parse_ports(&ports)?;
            let n = ports::set_pod_ports(ds, ns, pod, &ports, &parsed).await?;
            println!(
                "pod {ns}/{pod}: {} port{} ({n} endpoint{})",
                parsed.len(),
                if parsed.len() == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" }
            );
        }
        Command::Policy {
            command: PolicyCommand::Trace { from, to, port },
        } => {
            let (model, policies, problems) = policy_trace::load(ds).await?;
            for p in &problems {
                eprintln!("trellisctl: not enforced, left out of the trace: {p}");
            }
            print!(
                "{}",
                policy_trace::run_trace(&model, &policies, &from, &to, port)?
            );
        }
        Command::Ipam { command } => match command {
            IpamCommand::Show { show_blocks } => {
                print!("{}", ipam_cmd::show(ds, show_blocks).await?)
            }
            IpamCommand::Check => {
                let (report, problems) = ipam_cmd::run_check(ds).await?;
                print!("{report}");
                if problems > 0 {
                    eprintln!("trellisctl: ipam check found {problems} problems");
                    return Ok(ExitCode::FAILURE);
                }
            }
            IpamCommand::Assign {
                node,
                handle,
                ipv4,
                ipv6,
                ips,
                pod,
            } => {
                let args = ipam_cmd::AssignArgs {
                    node,
                    handle,
                    ipv4,
                    ipv6,
                    ips,
                    pod,
                };
                print!("{}", ipam_cmd::assign(cli_ds.clone(), args).await?)
            }
            IpamCommand::Release { ips } => print!("{}", ipam_cmd::release(ds, &ips).await?),
            IpamCommand::Gc { grace_period } => {
                print!("{}", ipam_cmd::run_gc(ds, grace_period).await?)
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trellisctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("trellisctl: {msg}");
            ExitCode::FAILURE
        }
    }
}
