//! A BGP-4 speaker for Trellis nodes and route reflectors.
//!
//! Layers, least powerful first:
//! - [`fsm`]: the RFC 4271 section 8 session state machine, sans-IO;
//! - [`wire`]: framing and decoding on `netgauze-bgp-pkt`, with RFC 7606 classification in
//!   [`revised_errors`];
//! - [`rib`]: Adj-RIB-In, Loc-RIB with the decision process, Adj-RIB-Out;
//! - [`session`] and [`speaker`]: the async drivers (TCP, timers, one owner task);
//! - [`kernel`]: installs Loc-RIB best paths into the kernel under a dedicated protocol id.

pub mod attrs;
pub mod conn;
pub mod export;
pub mod family;
pub mod fsm;
pub mod install;
pub mod kernel;
pub mod open;
pub mod revised_errors;
pub mod rib;
pub mod speaker;
pub mod tcp_md5;
pub mod update;
pub mod wire;
