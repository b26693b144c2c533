//! `ipam`: how fast Trellis hands out pod addresses against one etcd, next to the cheapest write
//! that etcd does (a put of one key: the floor), for one node and for several nodes at once.
//!
//! Phases, each under a fresh key prefix of one private etcd started here (fsync on):
//! 1. floor, 1 client: sequential puts overwriting one key, value the mean size of a block
//!    document;
//! 2. trellis, 1 node: sequential `auto_assign` of one IPv4 address per handle, then
//!    `release_handle` of each timed handle in a seeded random order (the CNI DEL path);
//! 3. floor, N clients at once, each on its own connection putting its own key;
//! 4. trellis, N nodes at once, each on its own connection, allocating from one shared pool.
//!
//! Every worker first runs untimed warm-up operations (connection set-up, the node's first block
//! claim, the first topology read), then all workers start together. Allocations that land in a
//! block the node did not hold before are block claims: they are in the node's figures and are
//! also shown on their own. The four phases run `--rounds` times, interleaved, so background load
//! falls on floor and trellis alike; the table pools all rounds and the ratios are also given per
//! round, which shows how far to trust them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use clap::Parser;
use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use trellis_bench::report::{self, Ratio, Row};
use trellis_bench::stats::{Latencies, Span, Summary};
use trellis_datastore::codec;
use trellis_datastore::etcd::{EtcdConfig, EtcdDatastore};
use trellis_datastore::resources::{IpPool, IpPoolSpec, Node, NodeSpec};
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::{keys, Datastore, ObjectMeta};
use trellis_ipam::{AssignRequest, NodeIpam};

/// Large enough (16384 /26 blocks) that no node ever borrows: only own-block allocations and
/// claims are measured.
const POOL_CIDR: &str = "10.0.0.0/12";

#[derive(Debug, Parser)]
#[command(about = "IPAM allocation rate and latency against etcd, next to a plain put")]
struct Args {
    /// Timed allocations for the single node (and timed puts for the single client).
    #[arg(long, default_value_t = 2000)]
    allocations: u64,
    /// Concurrent nodes (and concurrent clients for the floor).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Timed allocations (and puts) per node when concurrent.
    #[arg(long, default_value_t = 500)]
    per_node: u64,
    /// Untimed operations each worker runs first.
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// Size of the floor's value. The default is the mean block document written while a /26
    /// fills: about 360 bytes empty plus about 100 per allocation (6890 bytes full).
    #[arg(long, default_value_t = 3584)]
    value_bytes: usize,
    /// Seeds the floor's value bytes and the release order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Times every phase runs, interleaved, so that background load hits floor and trellis
    /// alike; figures are over all rounds, ratios are also shown per round.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

/// Timed operations of one scenario: one worker's, one round's, or all rounds' together.
#[derive(Debug, Default)]
struct Tally {
    all: Latencies,
    /// Allocations that claimed a new block (empty for puts and releases).
    claims: Latencies,
    /// Allocations in a block the node already held (empty for puts and releases).
    in_block: Latencies,
    /// Wall-clock time the operations took, summed over rounds.
    wall: Duration,
    /// Handles allocated in the timed part.
    handles: Vec<String>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.all.merge(&other.all);
        self.claims.merge(&other.claims);
        self.in_block.merge(&other.in_block);
        self.wall += other.wall;
        self.handles.extend(other.handles);
    }

    fn summary(&self) -> Summary {
        Summary::of_run(&self.all, self.wall)
    }
}

/// What one round measured.
#[derive(Debug, Default)]
struct Round {
    floor_1: Tally,
    assign_1: Tally,
    release_1: Tally,
    floor_n: Tally,
    assign_n: Tally,
    /// Smallest and largest block document after the single-node phase.
    block_bytes: (usize, usize),
}

impl Round {
    fn absorb(&mut self, other: Round) {
        self.floor_1.absorb(other.floor_1);
        self.assign_1.absorb(other.assign_1);
        self.release_1.absorb(other.release_1);
        self.floor_n.absorb(other.floor_n);
        self.assign_n.absorb(other.assign_n);
        self.block_bytes = other.block_bytes;
    }

    fn ratios(&self, prefix: &str, nodes: usize) -> Vec<Ratio> {
        let floor_1 = self.floor_1.summary();
        vec![
            Ratio::of(
                format!("{prefix}assign, 1 node"),
                &self.assign_1.summary(),
                &floor_1,
            ),
            Ratio::of(
                format!("{prefix}release, 1 node"),
                &self.release_1.summary(),
                &floor_1,
            ),
            Ratio::of(
                format!("{prefix}assign, {nodes} nodes"),
                &self.assign_n.summary(),
                &self.floor_n.summary(),
            ),
        ]
    }
}

fn bench_config(server: &EtcdServer, name: &str) -> EtcdConfig {
    let mut config = server.config(name);
    // The fixture's 2 s suits outage tests; a benchmark must not fail on a slow fsync.
    config.request_timeout = Duration::from_secs(30);
    config.connect_timeout = Duration::from_secs(5);
    config
}

async fn connect(config: &EtcdConfig) -> Result<Arc<dyn Datastore>> {
    let ds = EtcdDatastore::connect(config.clone())
        .await
        .with_context(|| format!("connecting to etcd at {:?}", config.endpoints))?;
    Ok(Arc::new(ds))
}

fn elapsed_since(began: Instant) -> Span {
    Span {
        start: began,
        end: Instant::now(),
    }
}

async fn put_worker(
    ds: Arc<dyn Datastore>,
    key: String,
    value: Vec<u8>,
    warmup: u64,
    ops: u64,
    start: Arc<Barrier>,
) -> Result<(Tally, Span)> {
    for _ in 0..warmup {
        ds.put(&key, value.clone()).await?;
    }
    start.wait().await;
    let mut m = Tally::default();
    let began = Instant::now();
    for _ in 0..ops {
        let value = value.clone();
        let t = Instant::now();
        ds.put(&key, value).await?;
        m.all.record(t.elapsed());
    }
    Ok((m, elapsed_since(began)))
}

async fn assign_worker(
    ipam: Arc<NodeIpam>,
    block_prefix: u8,
    warmup: u64,
    ops: u64,
    start: Arc<Barrier>,
) -> Result<(Tally, Span)> {
    let node = ipam.node().to_string();
    let mut held: BTreeSet<IpNet> = BTreeSet::new();
    let mut assign = async |handle: &str| -> Result<bool> {
        let req = AssignRequest {
            handle: handle.to_string(),
            num_v4: 1,
            ..Default::default()
        };
        let got = ipam
            .auto_assign(&req)
            .await
            .with_context(|| format!("{node}: allocating for {handle}"))?;
        ensure!(
            got.v4.len() == 1,
            "{node}: asked for 1 address, got {got:?}"
        );
        // A block not seen before was claimed by this call (the pool is never short of blocks,
        // so nothing is borrowed).
        Ok(held.insert(block_of(got.v4[0], block_prefix)?))
    };
    let handle = |i: u64| format!("{node}-c{i}.eth0");
    for i in 0..warmup {
        assign(&handle(i)).await?;
    }
    start.wait().await;
    let mut m = Tally::default();
    let began = Instant::now();
    for i in warmup..warmup + ops {
        let h = handle(i);
        let t = Instant::now();
        let claimed = assign(&h).await?;
        let took = t.elapsed();
        m.all.record(took);
        if claimed {
            m.claims.record(took);
        } else {
            m.in_block.record(took);
        }
        m.handles.push(h);
    }
    Ok((m, elapsed_since(began)))
}

fn block_of(ip: IpAddr, prefix: u8) -> Result<IpNet> {
    Ok(IpNet::new(ip, prefix)
        .with_context(|| format!("block /{prefix} of {ip}"))?
        .trunc())
}

/// Waits for workers that started together (on a barrier, after warming up) and merges their
/// figures; the wall time runs from the first start to the last finish.
async fn together(workers: Vec<JoinHandle<Result<(Tally, Span)>>>) -> Result<Tally> {
    let mut total = Tally::default();
    let mut span: Option<Span> = None;
    for w in workers {
        let (m, s) = w.await.context("benchmark worker panicked")??;
        total.absorb(m);
        span = Some(span.map_or(s, |span| span.union(s)));
    }
    total.wall = span.map_or(Duration::ZERO, Span::duration);
    Ok(total)
}

async fn floor(
    config: &EtcdConfig,
    clients: usize,
    per_client: u64,
    warmup: u64,
    value: &[u8],
) -> Result<Tally> {
    let start = Arc::new(Barrier::new(clients));
    let mut workers = Vec::new();
    for c in 0..clients {
        let ds = connect(config).await?;
        workers.push(tokio::spawn(put_worker(
            ds,
            format!("floor/{c}"),
            value.to_vec(),
            warmup,
            per_client,
            start.clone(),
        )));
    }
    together(workers).await
}

fn node_name(n: usize) -> String {
    format!("node-{n}")
}

/// Writes the pool (and the nodes, as the agent would) and returns the pool's block prefix.
async fn setup_ipam(admin: &dyn Datastore, nodes: usize) -> Result<u8> {
    let pool = IpPool::new(
        ObjectMeta::named("bench"),
        IpPoolSpec::new(POOL_CIDR.parse()?),
    );
    pool.validate()
        .map_err(|e| anyhow!("pool {POOL_CIDR}: {e}"))?;
    admin.put(&pool.key(), codec::encode_object(&pool)?).await?;
    for n in 0..nodes {
        let node = Node::new(ObjectMeta::named(node_name(n)), NodeSpec::default());
        admin.put(&node.key(), codec::encode_object(&node)?).await?;
    }
    Ok(pool.spec.block_size())
}

/// Runs the allocation phase; also returns the node agents, so the release phase is served by
/// the agent that allocated (as the CNI DEL is), with what it holds in memory.
async fn assign(
    config: &EtcdConfig,
    nodes: usize,
    per_node: u64,
    warmup: u64,
) -> Result<(Tally, Vec<Arc<NodeIpam>>)> {
    let admin = connect(config).await?;
    let block_prefix = setup_ipam(admin.as_ref(), nodes).await?;
    let start = Arc::new(Barrier::new(nodes));
    let mut workers = Vec::new();
    let mut agents = Vec::new();
    for n in 0..nodes {
        // Each node is its own agent: its own connection and cache.
        let ipam = Arc::new(NodeIpam::new(connect(config).await?, node_name(n)));
        agents.push(ipam.clone());
        workers.push(tokio::spawn(assign_worker(
            ipam,
            block_prefix,
            warmup,
            per_node,
            start.clone(),
        )));
    }
    Ok((together(workers).await?, agents))
}

/// Releases `handles` one after another, in a seeded random order (pods do not die in the
/// order they started).
async fn release(ipam: &NodeIpam, handles: &[String], seed: u64) -> Result<Tally> {
    let mut handles = handles.to_vec();
    handles.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut m = Tally::default();
    let began = Instant::now();
    for h in &handles {
        let t = Instant::now();
        let released = ipam
            .release_handle(h)
            .await
            .with_context(|| format!("releasing {h}"))?;
        m.all.record(t.elapsed());
        ensure!(released.len() == 1, "{h} released {released:?}");
    }
    m.wall = elapsed_since(began).duration();
    Ok(m)
}

/// Smallest and largest stored block document, to compare with the floor's value size.
async fn block_bytes(config: &EtcdConfig) -> Result<(usize, usize)> {
    let blocks = connect(config).await?.list(keys::IPAM_BLOCKS).await?;
    let sizes = blocks.items.iter().map(|kv| kv.value.len());
    Ok((sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0)))
}

/// All four phases, each under a fresh prefix.
async fn round(server: &EtcdServer, args: &Args, value: &[u8], r: u32) -> Result<Round> {
    let (n, warmup) = (args.nodes, args.warmup);
    let progress = |what: &str| eprintln!("round {}/{}: {what}", r + 1, args.rounds);
    progress(&format!("floor, {} puts, 1 client", args.allocations));
    let floor_1 = floor(
        &bench_config(server, "floor-1"),
        1,
        args.allocations,
        warmup,
        value,
    )
    .await?;
    progress(&format!(
        "trellis, {} allocations, 1 node",
        args.allocations
    ));
    let config = bench_config(server, "trellis-1");
    let (assign_1, agents) = assign(&config, 1, args.allocations, warmup).await?;
    let block_bytes = block_bytes(&config).await?;
    progress(&format!(
        "trellis, {} releases, 1 node",
        assign_1.handles.len()
    ));
    let release_1 = release(
        &agents[0],
        &assign_1.handles,
        args.seed.wrapping_add(r.into()),
    )
    .await?;
    progress(&format!("floor, {} puts each, {n} clients", args.per_node));
    let floor_n = floor(
        &bench_config(server, "floor-n"),
        n,
        args.per_node,
        warmup,
        value,
    )
    .await?;
    progress(&format!(
        "trellis, {} allocations each, {n} nodes",
        args.per_node
    ));
    let (assign_n, _) =
        assign(&bench_config(server, "trellis-n"), n, args.per_node, warmup).await?;
    Ok(Round {
        floor_1,
        assign_1,
        release_1,
        floor_n,
        assign_n,
        block_bytes,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.nodes > 0 && args.rounds > 0,
        "--nodes and --rounds must be at least 1"
    );
    let mut value = vec![0u8; args.value_bytes];
    StdRng::seed_from_u64(args.seed).fill(&mut value[..]);
    let load_before = load_average();

    let server = EtcdServer::start();
    eprintln!("etcd at {} (fsync on)", server.endpoint());
    let mut total = Round::default();
    let mut per_round = Vec::new();
    for r in 0..args.rounds {
        let one = round(&server, &args, &value, r).await?;
        per_round.extend(one.ratios(&format!("round {}: ", r + 1), args.nodes));
        total.absorb(one);
    }
    drop(server);

    let n = args.nodes;
    let kib = args.value_bytes as f64 / 1024.0;
    let rows = vec![
        Row::new(
            format!("floor: put {kib:.1} KiB, 1 client"),
            total.floor_1.summary(),
        ),
        Row::new("trellis: assign 1 IPv4, 1 node", total.assign_1.summary()),
        Row::new(
            "  in a held block",
            Summary::of_subset(&total.assign_1.in_block),
        ),
        Row::new(
            "  claiming a block",
            Summary::of_subset(&total.assign_1.claims),
        ),
        Row::new("trellis: release handle, 1 node", total.release_1.summary()),
        Row::new(
            format!("floor: put {kib:.1} KiB, {n} clients"),
            total.floor_n.summary(),
        ),
        Row::new(
            format!("trellis: assign 1 IPv4, {n} nodes"),
            total.assign_n.summary(),
        ),
        Row::new(
            "  in a held block",
            Summary::of_subset(&total.assign_n.in_block),
        ),
        Row::new(
            "  claiming a block",
            Summary::of_subset(&total.assign_n.claims),
        ),
    ];
    let mut ratios = total.ratios("", n);
    if args.rounds > 1 {
        ratios.extend(per_round);
    }
    print!("{}", report::render(&rows, &ratios));
    let (smallest, largest) = total.block_bytes;
    println!(
        "\n{} round(s); {} untimed warm-up operations per worker and phase; pool {POOL_CIDR}; \
         block documents {smallest}..{largest} bytes; load average {load_before} before, {} after",
        args.rounds,
        args.warmup,
        load_average()
    );
    Ok(())
}
