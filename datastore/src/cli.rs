//! Command-line flags for reaching the datastore, shared by `trellisctl` and `trellis-agent`
//! (feature `cli`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::{EtcdConfig, EtcdDatastore, EtcdTls};
use crate::keys::DEFAULT_PREFIX;
use crate::Datastore;
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "TRELLIS_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ',',
        global = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of the Trellis datastore.
    #[arg(long, env = "TRELLIS_ETCD_PREFIX", default_value = DEFAULT_PREFIX, global = true)]
    pub etcd_prefix: String,
    /// CA certificate (PEM) for https endpoints.
    #[arg(long, env = "TRELLIS_ETCD_CA_CERT_FILE", global = true)]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(
        long,
        env = "TRELLIS_ETCD_CERT_FILE",
        global = true,
        requires = "etcd_key_file"
    )]
    pub etcd_cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(
        long,
        env = "TRELLIS_ETCD_KEY_FILE",
        global = true,
        requires = "etcd_cert_file"
    )]
    pub etcd_key_file: Option<PathBuf>,
    #[arg(long, env = "TRELLIS_ETCD_USERNAME", global = true)]
    pub etcd_username: Option<String>,
    /// Prefer the environment variable: a flag shows up in the process list.
    #[arg(
        long,
        env = "TRELLIS_ETCD_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// Seconds to wait for etcd before giving up.
    #[arg(long, default_value_t = 5, global = true)]
    pub etcd_timeout: u64,
}

impl ConnectArgs {
    pub fn config(&self) -> anyhow::Result<EtcdConfig> {
        let mut c =
            EtcdConfig::new(self.etcd_endpoints.clone()).with_prefix(self.etcd_prefix.clone());
        if !c.prefix.ends_with('/') {
            c.prefix.push('/');
        }
        if let Some(ca) = &self.etcd_ca_cert_file {
            c.tls = Some(EtcdTls {
                ca_file: ca.clone(),
                cert_file: self.etcd_cert_file.clone(),
                key_file: self.etcd_key_file.clone(),
                domain: None,
            });
        } else if self.etcd_cert_file.is_some() {
            anyhow::bail!("--etcd-cert-file needs --etcd-ca-cert-file to verify the server");
        }
        c.username = self.etcd_username.clone();
        c.password = self.etcd_password.clone();
        c.connect_timeout = Duration::from_secs(self.etcd_timeout.max(1));
        c.request_timeout = Duration::from_secs(self.etcd_timeout.max(1));
        Ok(c)
    }

    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Datastore>> {
        let config = self.config()?;
        let ds = EtcdDatastore::connect(config)
            .await
            .with_context(|| format!("connecting to etcd at {}", self.etcd_endpoints.join(",")))?;
        Ok(Arc::new(ds))
    }
}
