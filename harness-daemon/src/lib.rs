//! harness: enclose an AI agent, record everything it exchanges, prove the record intact.
//!
//! The modules follow the way of the data (see DESIGN.md):
//! hook → accept/orig-dst → policy → (tls → http → semantics) → ledger → verify,
//! composed in one place, [`engine`].
pub mod ledger;
pub mod enclosure;
pub mod hook;
pub mod accept;
pub mod engine;
pub mod forward;
pub mod resolver;
pub mod session;
pub mod run;
pub mod dns;
pub mod policy;
