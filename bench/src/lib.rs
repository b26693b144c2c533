//! Shared pieces of the Trellis benchmarks (binaries under `src/bin/`).
//!
//! - [`stats`]: latency histograms in microseconds and the wall-clock span of a timed run;
//! - [`report`]: the printed table and the trellis-over-floor ratios;
//! - [`host`]: what a benchmark needs of the machine (root);
//! - [`netns`]: the run's network namespaces, and those a killed run left.

pub mod host;
pub mod netns;
pub mod policy_gen;
pub mod report;
pub mod stats;
