//! What each CNI command does. ADD and DEL tie the CNI request to the node agent (addresses,
//! endpoint) and to [`crate::wiring`] (interfaces, routes); every failure is answered with CNI
//! error JSON in the caller's version, and a failed ADD leaves nothing behind.

mod add;
mod check;
mod del;
mod delegate;
mod gc_status;
mod pod;

use crate::spec::{parse_request, CniError, Command, ErrorCode, Invocation, Request};
use trellis_agent_api::{AgentClient, BlockingAgentClient, ClientError};

/// What the plugin prints on stdout, and whether it succeeded (exit status 0).
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub ok: bool,
}

/// Runs one plugin invocation: `lookup` reads the CNI_* environment, `stdin` is the network
/// configuration.
pub fn run(lookup: &dyn Fn(&str) -> Option<String>, stdin: &str) -> Outcome {
    let inv = match parse_request(lookup, stdin) {
        Ok(Request::Version(info)) => {
            return Outcome {
                stdout: info.to_json(),
                ok: true,
            }
        }
        Ok(Request::Command(inv)) => inv,
        Err(f) => {
            return Outcome {
                stdout: f.to_json(),
                ok: false,
            }
        }
    };
    let version = inv.version();
    let res = match inv.command() {
        Command::Add => add::add(&inv, stdin).map(|r| r.to_json(version)),
        Command::Del => del::del(&inv, stdin).map(|()| String::new()),
        Command::Check => check::check(&inv).map(|()| String::new()),
        Command::Gc => gc_status::gc(&inv, stdin).map(|()| String::new()),
        Command::Status => gc_status::status(&inv).map(|()| String::new()),
        Command::Version => unreachable!("VERSION is answered by parse_request"),
    };
    match res {
        Ok(stdout) => Outcome { stdout, ok: true },
        Err(e) => Outcome {
            stdout: e.to_json(Some(version)),
            ok: false,
        },
    }
}

/// A client of the agent named in the configuration.
fn agent(inv: &Invocation) -> Result<BlockingAgentClient, CniError> {
    AgentClient::new(inv.conf.agent_socket.clone())
        .blocking()
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("starting the agent client: {e}"),
            )
        })
}

/// An agent failure as a CNI error: unreachable -> 11 (try again later) naming the socket.
fn agent_error(e: ClientError) -> CniError {
    let code = e.cni_code();
    let msg = e.to_string();
    match ErrorCode::from_code(code) {
        Some(c) => CniError::new(c, msg),
        None => CniError::plugin(code, msg),
    }
}
