//! One invocation, read whole: the environment, then (except for VERSION) the configuration and
//! the check that its version knows the command. Whatever fails, the caller's version is known
//! (read from stdin on its own) so the error is answered in it.

use super::config::{ConfigError, NetConf};
use super::env::{CniEnv, Command, EnvError};
use super::error::CniError;
use super::version::{caller_version, CniVersion, VersionError, VersionInfo};

/// What the plugin was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// VERSION: print this answer.
    Version(VersionInfo),
    /// ADD, DEL, CHECK, GC or STATUS with its configuration.
    Command(Box<Invocation>),
}

/// A command other than VERSION, with everything it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub env: CniEnv,
    pub conf: NetConf,
}

impl Invocation {
    pub fn command(&self) -> Command {
        self.env.command
    }

    /// The version every answer (result or error) must be rendered in.
    pub fn version(&self) -> CniVersion {
        self.conf.cni_version
    }
}

/// Why a request could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// A failed request and the version to answer in (`None`: the newest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: RequestError,
    pub version: Option<CniVersion>,
}

impl Failure {
    /// No `CNI_COMMAND`: the binary was probably run by hand and may print an "about" line
    /// instead of an error object (libcni's skel does).
    pub fn is_missing_command(&self) -> bool {
        matches!(self.error, RequestError::Env(EnvError::MissingCommand))
    }

    pub fn cni_error(&self) -> CniError {
        match &self.error {
            RequestError::Env(e) => e.clone().into(),
            RequestError::Config(e) => e.clone().into(),
            RequestError::Version(e) => e.clone().into(),
        }
    }

    /// The error object to print on stdout.
    pub fn to_json(&self) -> String {
        self.cni_error().to_json(self.version)
    }
}

/// Reads one invocation from its environment and stdin.
pub fn parse_request(
    lookup: &dyn Fn(&str) -> Option<String>,
    stdin: &str,
) -> Result<Request, Failure> {
    let fail = |error: RequestError| Failure {
        error,
        version: caller_version(stdin),
    };
    let env = CniEnv::from_lookup(lookup).map_err(|e| fail(e.into()))?;
    if !env.command.reads_config() {
        return Ok(Request::Version(VersionInfo::from_stdin(stdin)));
    }
    let conf = NetConf::parse(stdin).map_err(|e| fail(e.into()))?;
    conf.cni_version
        .check_command(env.command)
        .map_err(|e| fail(e.into()))?;
    Ok(Request::Command(Box::new(Invocation { env, conf })))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
