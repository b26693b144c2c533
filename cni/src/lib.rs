//! The `trellis` CNI plugin (CNI spec 0.4.0, 1.0.0, 1.1.0).
//!
//! - [`spec`]: the CNI protocol itself: configuration, environment, CNI_ARGS, results and errors,
//!   rendered in the version the runtime asked for;
//! - [`commands`]: what each CNI command does, tying the two to the node agent;
//! - [`wiring`]: what ADD, DEL and CHECK do to the node's and the pod's network namespaces.

pub mod commands;
pub mod spec;
pub mod wiring;
