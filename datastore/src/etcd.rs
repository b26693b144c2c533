//! The etcd v3 backend of [`Datastore`] (etcd-client over gRPC).
//!
//! Keys given to the trait are relative; this backend stores them under `EtcdConfig::prefix`
//! and strips the prefix from everything it returns. Conditional writes are single etcd
//! transactions whose else-branch re-reads the compared keys, so a failed condition is reported
//! with the key and both revisions without a second round trip.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOpResponse, WatchClient, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use tonic::Code;

use crate::error::{DatastoreError, Result};
use crate::keys::DEFAULT_PREFIX;
use crate::kv::{Datastore, KeyValue, Listing, TxnOp, WatchEvent, WatchStream};
use crate::memory::{check_duplicate_writes, condition_error, expected_revision};

/// Large listings (every workload endpoint of a cluster) exceed gRPC's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// TLS material for `https://` endpoints. Files are PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    /// Client certificate and key, for clusters that authenticate clients by certificate.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, when it differs from the endpoint host.
    pub domain: Option<String>,
}

/// How to reach etcd.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port` (a bare `host:port` follows `tls`).
    pub endpoints: Vec<String>,
    /// Prepended to every key; ends with `/`.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Bound on establishing a connection; an unreachable endpoint fails within it.
    pub connect_timeout: Duration,
    /// Bound on each request (watch streams excepted once established).
    pub request_timeout: Duration,
}

impl fmt::Debug for EtcdConfig {
    // The password must not end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self::new(vec!["http://127.0.0.1:2379".to_string()])
    }
}

impl EtcdConfig {
    /// Plain-text, unauthenticated access to `endpoints` under the default prefix.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            tls: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    async fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            // Detects a peer that vanished without closing the connection (watches would
            // otherwise wait forever). etcd refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => opts = opts.with_user(user, password),
            (None, None) => {}
            (Some(user), None) => {
                return Err(DatastoreError::Config(format!(
                    "etcd user {user:?} has no password"
                )))
            }
            (None, Some(_)) => {
                return Err(DatastoreError::Config(
                    "etcd password given without a username".into(),
                ))
            }
        }
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls_options(tls).await?);
        }
        Ok(opts)
    }
}

async fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| {
        DatastoreError::Config(format!(
            "cannot read etcd TLS {what} {}: {e}",
            path.display()
        ))
    })
}

async fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    let ca = read_pem("CA file", &tls.ca_file).await?;
    let mut opts = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(
                read_pem("certificate file", cert).await?,
                read_pem("key file", key).await?,
            );
            opts = opts.identity(identity);
        }
        (None, None) => {}
        (Some(file), None) | (None, Some(file)) => {
            return Err(DatastoreError::Config(format!(
                "etcd TLS client certificate and key go together; only {} was given",
                file.display()
            )))
        }
    }
    if let Some(domain) = &tls.domain {
        opts = opts.domain_name(domain);
    }
    Ok(opts)
}

/// The etcd-backed [`Datastore`].
#[derive(Clone)]
pub struct EtcdDatastore {
    // Kept so the endpoint set stays managed for as long as the datastore lives.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
    endpoints: String,
    request_timeout: Duration,
}

impl fmt::Debug for EtcdDatastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDatastore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdDatastore {
    /// Connects and checks that etcd answers (within `connect_timeout`), so a wrong endpoint is
    /// reported here as `Unavailable` rather than at the first write.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(DatastoreError::Config(
                "no etcd endpoints configured".into(),
            ));
        }
        if !config.prefix.ends_with('/') {
            return Err(DatastoreError::Config(format!(
                "etcd key prefix {:?} must end with '/'",
                config.prefix
            )));
        }
        let endpoints = config.endpoints.join(",");
        let opts = config.connect_options().await?;
        let user = config.username.as_deref().unwrap_or_default();
        let req = Req {
            endpoints: &endpoints,
            op: "authenticate",
            key: user,
            full_key: format!("as {user:?}"),
        };
        let connecting = Client::connect(&config.endpoints, Some(opts));
        let client = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Err(_) => {
                let after = config.connect_timeout;
                return Err(req.unavailable(format_args!("no answer within {after:?}")));
            }
            // Authentication is the only network step of `Client::connect`; everything else that
            // fails there is the configuration (endpoint URL, TLS material).
            Ok(Err(etcd_client::Error::GRpcStatus(status))) => {
                return Err(req.status_error(&status))
            }
            Ok(Err(e)) => {
                return Err(DatastoreError::Config(format!(
                    "etcd endpoints {endpoints}: {e}"
                )))
            }
            Ok(Ok(client)) => client,
        };
        let ds = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            _client: client,
            prefix: config.prefix,
            endpoints,
            request_timeout: config.connect_timeout,
        };
        ds.revision().await?;
        Ok(Self {
            request_timeout: config.request_timeout,
            ..ds
        })
    }

    /// The key prefix this datastore lives under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The endpoints, comma separated (as errors name them).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Discards history before `revision` (cluster-wide: etcd compaction is not per prefix).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let mut kv = self.kv.clone();
        self.call("compact", "", kv.compact(revision, None))
            .await
            .map(drop)
    }

    fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn relative(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let raw = String::from_utf8_lossy(kv.key());
        let key = match raw.strip_prefix(self.prefix.as_str()) {
            Some(rel) if kv.key_str().is_ok() => rel.to_string(),
            _ => {
                return Err(DatastoreError::Codec {
                    key: raw.into_owned(),
                    reason: format!("key is not UTF-8 under prefix {}", self.prefix),
                })
            }
        };
        Ok(KeyValue {
            key,
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        })
    }

    /// Runs one request with the request timeout, mapping failures to typed errors.
    async fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let result = tokio::time::timeout(self.request_timeout, fut).await;
        let req = || Req {
            endpoints: &self.endpoints,
            op,
            key,
            full_key: format!("{}{key}", self.prefix),
        };
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(req().client_error(e)),
            Err(_) => {
                Err(req().unavailable(format_args!("no answer within {:?}", self.request_timeout)))
            }
        }
    }
}

/// What a request was about, so its failure can name the endpoints, the operation and the key.
struct Req<'a> {
    endpoints: &'a str,
    op: &'static str,
    /// The key as the caller gave it (relative), for the typed error fields.
    key: &'a str,
    /// The key as stored (with the prefix), for messages.
    full_key: String,
}

impl Req<'_> {
    fn unavailable(&self, reason: impl fmt::Display) -> DatastoreError {
        DatastoreError::Unavailable {
            endpoints: self.endpoints.to_string(),
            reason: format!("{} {}: {reason}", self.op, self.full_key),
        }
    }

    fn client_error(&self, err: etcd_client::Error) -> DatastoreError {
        use etcd_client::Error as E;
        match err {
            E::GRpcStatus(status) => self.status_error(&status),
            E::Utf8Error(e) => DatastoreError::Codec {
                key: self.key.to_string(),
                reason: e.to_string(),
            },
            // Transport, I/O and closed-channel errors: the connection is the problem.
            other => self.unavailable(other),
        }
    }

    /// gRPC codes meaning "the server or the path to it is in trouble" are `Unavailable`
    /// (worth retrying); the rest are refusals of this request.
    fn status_error(&self, status: &tonic::Status) -> DatastoreError {
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal => self.unavailable(status.message()),
            code => DatastoreError::Rejected {
                op: self.op,
                key: self.key.to_string(),
                reason: format!("{code:?}: {}", status.message()),
            },
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

#[async_trait]
impl Datastore for EtcdDatastore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv.clone();
        let resp = self.call("get", key, kv.get(self.full(key), None)).await?;
        resp.kvs().first().map(|kv| self.relative(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut kv = self.kv.clone();
        let opts = GetOptions::new().with_prefix();
        let resp = self
            .call("list", prefix, kv.get(self.full(prefix), Some(opts)))
            .await?;
        // etcd returns a range sorted by key.
        let items = resp
            .kvs()
            .iter()
            .map(|kv| self.relative(kv))
            .collect::<Result<_>>()?;
        Ok(Listing {
            items,
            revision: header_revision(resp.header()),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.txn(vec![TxnOp::Create {
            key: key.to_string(),
            value,
        }])
        .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<i64> {
        self.txn(vec![TxnOp::Update {
            key: key.to_string(),
            value,
            expected_revision,
        }])
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let mut kv = self.kv.clone();
        let resp = self
            .call("put", key, kv.put(self.full(key), value, None))
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<()> {
        if expected_revision.is_some() {
            let op = TxnOp::Delete {
                key: key.to_string(),
                expected_revision,
            };
            return self.txn(vec![op]).await.map(drop);
        }
        let mut kv = self.kv.clone();
        let resp = self
            .call("delete", key, kv.delete(self.full(key), None))
            .await?;
        if resp.deleted() == 0 {
            return Err(DatastoreError::NotFound {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<i64> {
        check_duplicate_writes(&ops)?;
        let guarded: Vec<(&TxnOp, i64)> = ops
            .iter()
            .filter_map(|op| Some((op, expected_revision(op)?)))
            .collect();
        let compares: Vec<Compare> = guarded
            .iter()
            .map(|(op, expected)| match op {
                TxnOp::Create { key, .. } => {
                    Compare::create_revision(self.full(key), CompareOp::Equal, 0)
                }
                _ => Compare::mod_revision(self.full(op.key()), CompareOp::Equal, *expected),
            })
            .collect();
        // On failure etcd runs the else-branch: read the revision of every guarded key, at the
        // same revision the compares saw, to name the first failing op.
        let reads: Vec<etcd_client::TxnOp> = guarded
            .iter()
            .map(|(op, _)| {
                let keys_only = GetOptions::new().with_keys_only();
                etcd_client::TxnOp::get(self.full(op.key()), Some(keys_only))
            })
            .collect();
        let writes: Vec<etcd_client::TxnOp> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Create { key, value } | TxnOp::Update { key, value, .. } => {
                    Some(etcd_client::TxnOp::put(self.full(key), value.clone(), None))
                }
                TxnOp::Delete { key, .. } => Some(etcd_client::TxnOp::delete(self.full(key), None)),
                TxnOp::Check { .. } => None,
            })
            .collect();
        let label = ops.first().map_or("", TxnOp::key);
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let mut kv = self.kv.clone();
        let resp = self.call("txn", label, kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        for ((op, expected), read) in guarded.iter().zip(resp.op_responses()) {
            let actual = match read {
                TxnOpResponse::Get(get) => get.kvs().first().map_or(0, |kv| kv.mod_revision()),
                _ => 0,
            };
            if actual != *expected {
                return Err(condition_error(op, actual));
            }
        }
        Err(DatastoreError::Rejected {
            op: "txn",
            key: label.to_string(),
            reason: "etcd reported a failed condition that its own reads do not show".into(),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision.max(0));
        let mut client = self.watch.clone();
        let stream = self
            .call("watch", prefix, client.watch(self.full(prefix), Some(opts)))
            .await?;
        let state = EventStream {
            stream,
            pending: VecDeque::new(),
            done: false,
            ds: self.clone(),
            prefix: prefix.to_string(),
            from_revision,
        };
        Ok(futures::stream::unfold(state, EventStream::next).boxed())
    }

    async fn revision(&self) -> Result<i64> {
        // A count-only read of one key is the cheapest request that returns a header.
        let mut kv = self.kv.clone();
        let opts = GetOptions::new().with_count_only();
        let resp = self
            .call("revision", "", kv.get(self.prefix.clone(), Some(opts)))
            .await?;
        Ok(header_revision(resp.header()))
    }
}

/// Turns etcd watch responses into single events; ends after the first error.
struct EventStream {
    stream: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
    ds: EtcdDatastore,
    prefix: String,
    from_revision: i64,
}

impl EventStream {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => self.fail(self.req().unavailable("etcd closed the watch stream")),
                Err(e) => self.fail(self.req().client_error(e)),
            }
        }
    }

    fn req(&self) -> Req<'_> {
        Req {
            endpoints: &self.ds.endpoints,
            op: "watch",
            key: &self.prefix,
            full_key: format!("{}{}", self.ds.prefix, self.prefix),
        }
    }

    /// Queues `err` as the stream's last item.
    fn fail(&mut self, err: DatastoreError) {
        self.done = true;
        self.pending.push_back(Err(err));
    }

    /// Queues the events of one response, or the error that ends the watch.
    fn absorb(&mut self, resp: WatchResponse) {
        if resp.compact_revision() > 0 {
            self.fail(DatastoreError::Compacted {
                prefix: self.prefix.clone(),
                requested: self.from_revision,
                compact_revision: resp.compact_revision(),
            });
            return;
        }
        if resp.canceled() {
            // Not compaction: etcd refused the watch itself (e.g. permission denied).
            self.fail(DatastoreError::Rejected {
                op: "watch",
                key: self.prefix.clone(),
                reason: format!("etcd canceled the watch: {}", resp.cancel_reason()),
            });
            return;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match self.ds.relative(kv) {
                Ok(kv) => self.pending.push_back(Ok(match ev.event_type() {
                    etcd_client::EventType::Put => WatchEvent::Put(kv),
                    etcd_client::EventType::Delete => WatchEvent::Delete {
                        key: kv.key,
                        mod_revision: kv.mod_revision,
                    },
                })),
                // Skipping an undecodable key would leave the caller's view silently wrong.
                Err(e) => return self.fail(e),
            }
        }
    }
}
