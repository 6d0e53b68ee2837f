//! Sessions: which ledger a cgroup's traffic is recorded in, and the connections still open.
use crate::enclosure::SessionCgroup;
use crate::ledger::SessionWriter;
use crate::netns::SessionNetns;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One enclosed session.
pub struct Session {
    /// Where its entries go.
    pub writer: SessionWriter,
    /// Its cgroup.
    pub cgroup: SessionCgroup,
    /// Its network namespace, where the daemon's listeners for it live.
    pub netns: Arc<SessionNetns>,
    /// Connection and DNS exchange numbers, unique within the session.
    next_number: AtomicU64,
    /// Connections and DNS exchanges in flight.
    pub tasks: TaskTracker,
    /// Cancelled when the session closes, ending whatever is still in flight.
    pub closing: CancellationToken,
    /// One permit per connection it may have open (`limits.connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// How many that is: `limits.connections` of the policy in force when the session opened
    /// (a reload does not change it for sessions already open).
    connections_limit: usize,
    /// What it spent against its budget, and its requests waiting for a person.
    pub governor: Arc<crate::govern::Governor>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.writer.id())
            .field("cgroup", &self.cgroup)
            .finish()
    }
}

impl Session {
    /// A session recording to `writer` for the processes in `cgroup`, with at most
    /// `connections` open at once.
    pub fn new(
        writer: SessionWriter,
        cgroup: SessionCgroup,
        netns: SessionNetns,
        connections: usize,
        asks: Arc<crate::govern::Asks>,
    ) -> Session {
        let governor = crate::govern::Governor::new(writer.id().to_string(), asks);
        Session {
            governor,
            writer,
            cgroup,
            netns: Arc::new(netns),
            next_number: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(connections)),
            connections_limit: connections,
        }
    }

    /// How many connections it may have open at once.
    pub fn connections_limit(&self) -> usize {
        self.connections_limit
    }

    /// The next connection or exchange number.
    pub fn next_number(&self) -> u64 {
        self.next_number.fetch_add(1, Ordering::Relaxed)
    }
}

/// cgroup id → session.
#[derive(Debug, Default)]
pub struct Sessions {
    by_cgroup: RwLock<HashMap<u64, Arc<Session>>>,
}

impl Sessions {
    /// Registers a session under its cgroup id.
    pub fn insert(&self, session: Arc<Session>) {
        self.write().insert(session.cgroup.id(), session);
    }

    /// The session a cgroup id belongs to.
    pub fn get(&self, cgroup_id: u64) -> Option<Arc<Session>> {
        self.by_cgroup
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cgroup_id)
            .cloned()
    }

    /// Forgets a session.
    pub fn remove(&self, cgroup_id: u64) -> Option<Arc<Session>> {
        self.write().remove(&cgroup_id)
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_cgroup
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Arc<Session>>> {
        self.by_cgroup.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Host names learned from DNS answers, by address: what an enclosed process most likely meant
/// when it connects to an address (policy host rules and the ledger's `host` field use it).
#[derive(Debug, Default)]
pub struct Names {
    by_addr: RwLock<HashMap<IpAddr, String>>,
}

impl Names {
    /// Remembers that `name` resolved to `addr`.
    pub fn learn(&self, addr: IpAddr, name: &str) {
        self.by_addr
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_canonical(), name.to_owned());
    }

    /// The name last seen for `addr`.
    pub fn name_of(&self, addr: IpAddr) -> Option<String> {
        self.by_addr
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr.to_canonical())
            .cloned()
    }
}
