//! The CNI protocol, spec versions 0.4.0, 1.0.0 and 1.1.0, with no I/O: everything here reads
//! strings it is given and returns values or JSON strings.
//!
//! - [`env`]: `CNI_COMMAND` and the other variables, which ones each command needs;
//! - [`args`]: `CNI_ARGS` (`K8S_POD_*`, `IgnoreUnknown`, `IP`);
//! - [`config`] (with [`ipam`] and [`runtime`]): the network configuration on stdin;
//! - [`result`] and [`render`]: the success result, read in any version, written in one;
//! - [`version`]: supported versions, the VERSION answer, "answer in the caller's version";
//! - [`error`]: CNI error codes and the error object;
//! - [`request`]: all of the above for one invocation, in the order libcni's skel uses.
//!
//! Every failure maps to a CNI error code (`From<...> for CniError`) with a message that names the
//! variable or field at fault.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
mod json;
pub mod render;
pub mod request;
pub mod result;
pub mod runtime;
pub mod version;

pub use args::{ArgsError, CniArgs, RequestedIp};
pub use config::{ConfigError, GcAttachment, LogLevel, NetConf, DEFAULT_AGENT_SOCKET};
pub use env::{Attachment, CniEnv, Command, EnvError, Need};
pub use error::{CniError, ErrorCode, VersionedError, FIRST_PLUGIN_CODE};
pub use ipam::{DelegatedIpam, Ipam, PoolRef, TrellisIpam, TRELLIS_IPAM};
pub use json::{FieldError, Problem};
pub use render::VersionedResult;
pub use request::{parse_request, Failure, Invocation, Request, RequestError};
pub use result::{CniResult, Dns, Interface, IpConfig, ResultError, Route};
pub use runtime::{Bandwidth, MacAddr, PortMapping, Protocol, RuntimeConfig};
pub use version::{caller_version, CniVersion, VersionError, VersionInfo};
