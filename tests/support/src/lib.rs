//! Support code shared by the root and emulator tests of several crates (dev-dependency only):
//! `netns` for tests in network namespaces they create, `moto` for tests against the EC2
//! emulator.

pub mod moto;
pub mod netns;
