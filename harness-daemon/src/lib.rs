//! harness: enclose an AI agent, record everything it exchanges, prove the record intact.
//!
//! The modules follow the way of the data (see DESIGN.md):
//! hook → accept/orig-dst → policy → (tls → http → semantics) → ledger → verify,
//! composed in one place, [`engine`].
pub mod accept;
pub mod argv;
pub mod btf;
pub mod control;
pub mod cost;
pub mod daemon;
pub mod dns;
pub mod enclosure;
pub mod engine;
pub mod export;
pub mod govern;
pub mod home;
pub mod hook;
pub mod http;
pub mod init;
pub mod intercept;
pub mod ledger;
pub mod limits;
pub mod netns;
pub mod policy;
pub mod process;
pub mod record;
pub mod resolver;
pub mod run;
pub mod seccomp;
pub mod semantics;
pub mod session;
pub mod sniff;
pub mod stats;
pub mod strict;
pub mod timeline;
pub mod tls;
pub mod websocket;
