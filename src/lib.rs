//! Vigil: a Raft-replicated secrets store that speaks HashiCorp Vault's HTTP API.
//!
//! The crate is layered, and imports flow one way only:
//!
//! ```text
//!   cli ─┐
//!        ├─> server ─> http ─> engines ─> raft ─> storage
//! client ┘
//! ```
//!
//! - [`storage`]: an ordered key-value store behind a trait (sled today), with atomic batches and fsync.
//! - [`raft`]: openraft wiring: the log store, the state machine, the cluster transport, group commit.
//!   It applies opaque commands through the [`raft::CommandApplier`] trait and knows nothing of secrets.
//! - [`engines`]: what commands mean: mounts, kv-v1, tokens, cluster initialization.
//! - [`http`]: Vault's HTTP API: authentication, routing, forwarding to the active node, error mapping.
//! - [`server`]: wires one node together from its [`config`] and runs it until shutdown.
//! - [`client`] and [`cli`]: the `vigil` command-line client.
//! - [`proto`]: the event notification wire types, generated from `proto/event.proto` at build time.

pub mod cli;
pub mod client;
pub mod config;
pub mod engines;
mod hcl_util;
pub mod http;
pub mod proto;
pub mod raft;
pub mod server;
pub mod storage;
