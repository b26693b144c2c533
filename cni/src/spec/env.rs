//! The CNI parameters passed in environment variables (SPEC.md section 2, "Parameters" and each
//! operation's "Input"), read through a lookup function so tests never touch the process
//! environment: `CniEnv::from_lookup(&|k| std::env::var(k).ok())`.
//!
//! Which variable each command needs:
//!
//! | variable          | ADD | DEL | CHECK | VERSION | GC | STATUS |
//! |-------------------|-----|-----|-------|---------|----|--------|
//! | `CNI_COMMAND`     | req | req | req   | req     | req| req    |
//! | `CNI_CONTAINERID` | req | req | req   |         |    |        |
//! | `CNI_NETNS`       | req | opt | req   |         |    |        |
//! | `CNI_IFNAME`      | req | req | req   |         |    |        |
//! | `CNI_ARGS`        | opt | opt | opt   |         |    |        |
//! | `CNI_PATH`        | opt | opt | opt   |         | req| opt    |
//!
//! An empty variable counts as unset (runtimes send `CNI_NETNS=""` on DEL). Variables a command
//! does not use are ignored, not validated.

use std::fmt;
use std::path::PathBuf;

use super::args::{ArgsError, CniArgs};
use super::error::{CniError, ErrorCode};

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_IFNAME: &str = "CNI_IFNAME";
pub const CNI_ARGS: &str = "CNI_ARGS";
pub const CNI_PATH: &str = "CNI_PATH";

/// The variables of the table above, in its order.
pub const VARIABLES: [&str; 6] = [
    CNI_COMMAND,
    CNI_CONTAINERID,
    CNI_NETNS,
    CNI_IFNAME,
    CNI_ARGS,
    CNI_PATH,
];

/// Linux IFNAMSIZ is 16 bytes including the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// The operation asked for in `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Version,
        Command::Gc,
        Command::Status,
    ];

    /// The value of `CNI_COMMAND` (upper case, as the spec writes it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// Parses `CNI_COMMAND`. Exact match: the spec and libcni only ever send upper case.
    pub fn parse(s: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// ADD, DEL and CHECK act on one attachment `(CNI_CONTAINERID, CNI_IFNAME)`.
    pub const fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether this command reads the network configuration on stdin (all but VERSION).
    pub const fn reads_config(self) -> bool {
        !matches!(self, Command::Version)
    }

    /// How this command treats `var` (one of [`VARIABLES`]; any other name is [`Need::Unused`]).
    pub fn need(self, var: &str) -> Need {
        use Need::{Optional, Required, Unused};
        let attachment = self.has_attachment();
        match var {
            CNI_COMMAND => Required,
            CNI_CONTAINERID | CNI_IFNAME if attachment => Required,
            // SPEC.md DEL: CNI_NETNS is optional (the namespace may be gone already).
            CNI_NETNS if self == Command::Del => Optional,
            CNI_NETNS if attachment => Required,
            CNI_ARGS if attachment => Optional,
            // SPEC.md GC: "Required environment parameters: CNI_COMMAND, CNI_PATH".
            CNI_PATH if self == Command::Gc => Required,
            CNI_PATH if self != Command::Version => Optional,
            _ => Unused,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a command treats one environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
    Unused,
}

/// The attachment ADD, DEL and CHECK act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`, validated.
    pub container_id: String,
    /// `CNI_NETNS`: always `Some` for ADD and CHECK; may be `None` for DEL.
    pub netns: Option<String>,
    /// `CNI_IFNAME`, validated as a Linux interface name.
    pub ifname: String,
}

/// Everything the environment says about one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// `Some` exactly when [`Command::has_attachment`].
    pub attachment: Option<Attachment>,
    /// `CNI_ARGS`, parsed (empty for commands that do not use it).
    pub args: CniArgs,
    /// `CNI_PATH` split on `:`, empty entries dropped.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads and validates the variables `CNI_COMMAND` asks for. All missing required variables
    /// are named in one error, so the runtime's log says everything at once.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<CniEnv, EnvError> {
        let get = |var: &str| lookup(var).filter(|v| !v.is_empty());
        let command_value = get(CNI_COMMAND).ok_or(EnvError::MissingCommand)?;
        let command =
            Command::parse(&command_value).ok_or(EnvError::UnknownCommand(command_value))?;

        let missing: Vec<&'static str> = VARIABLES
            .into_iter()
            .filter(|var| command.need(var) == Need::Required && get(var).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Missing {
                command,
                vars: missing,
            });
        }
        // Below, `get` of a required variable is Some; of an unused one it is ignored.
        let uses = |var: &str| command.need(var) != Need::Unused;

        let attachment = if command.has_attachment() {
            let container_id = get(CNI_CONTAINERID).unwrap_or_default();
            validate_container_id(&container_id).map_err(|reason| EnvError::Invalid {
                var: CNI_CONTAINERID,
                value: container_id.clone(),
                reason,
            })?;
            let ifname = get(CNI_IFNAME).unwrap_or_default();
            validate_ifname(&ifname).map_err(|reason| EnvError::Invalid {
                var: CNI_IFNAME,
                value: ifname.clone(),
                reason,
            })?;
            Some(Attachment {
                container_id,
                netns: get(CNI_NETNS),
                ifname,
            })
        } else {
            None
        };

        let args = match get(CNI_ARGS).filter(|_| uses(CNI_ARGS)) {
            Some(raw) => CniArgs::parse(&raw)?,
            None => CniArgs::default(),
        };
        let path = get(CNI_PATH)
            .filter(|_| uses(CNI_PATH))
            .map(|raw| split_path(&raw))
            .unwrap_or_default();

        Ok(CniEnv {
            command,
            attachment,
            args,
            path,
        })
    }

    /// The container ID, for commands with an attachment.
    pub fn container_id(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.container_id.as_str())
    }

    /// The container's network namespace path, if given.
    pub fn netns(&self) -> Option<&str> {
        self.attachment.as_ref().and_then(|a| a.netns.as_deref())
    }

    /// The interface name inside the container, for commands with an attachment.
    pub fn ifname(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.ifname.as_str())
    }
}

/// `CNI_PATH` is a `:`-separated list on Linux; empty entries (`a::b`, trailing `:`) mean nothing.
pub fn split_path(raw: &str) -> Vec<PathBuf> {
    raw.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// SPEC.md: a container ID "must start with an alphanumeric character, optionally followed by
/// any combination of one or more alphanumeric characters, underscore (_), dot (.) or hyphen (-)".
pub fn validate_container_id(id: &str) -> Result<(), &'static str> {
    let mut chars = id.chars();
    match chars.next() {
        None => Err("must not be empty"),
        Some(first) if !first.is_ascii_alphanumeric() => {
            Err("must start with an ASCII letter or digit")
        }
        Some(_) => {
            if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                Ok(())
            } else {
                Err("may only contain ASCII letters, digits, '_', '.' and '-'")
            }
        }
    }
}

/// A Linux interface name as the kernel's `dev_valid_name()` accepts it: 1-15 bytes, not "." or
/// "..", no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("is longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// An environment the spec does not allow. Always CNI error 4 (invalid necessary environment
/// variables); the message names the variables.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// No `CNI_COMMAND`: probably run by hand. The binary may print an "about" line instead.
    #[error("CNI_COMMAND is not set")]
    MissingCommand,
    #[error("CNI_COMMAND {0:?} is not one of ADD, DEL, CHECK, VERSION, GC, STATUS")]
    UnknownCommand(String),
    #[error("{command} needs environment variables that are not set: {}", vars.join(", "))]
    Missing {
        command: Command,
        vars: Vec<&'static str>,
    },
    #[error("{var}={value:?} {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("CNI_ARGS: {0}")]
    Args(#[from] ArgsError),
}

impl EnvError {
    /// Always [`ErrorCode::InvalidEnvironment`].
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::InvalidEnvironment
    }

    /// The variables at fault.
    pub fn variables(&self) -> Vec<&'static str> {
        match self {
            EnvError::MissingCommand | EnvError::UnknownCommand(_) => vec![CNI_COMMAND],
            EnvError::Missing { vars, .. } => vars.clone(),
            EnvError::Invalid { var, .. } => vec![var],
            EnvError::Args(_) => vec![CNI_ARGS],
        }
    }
}

impl From<EnvError> for CniError {
    fn from(e: EnvError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
