//! The session's processes, read back from `process_fork` / `process_exec` / `process_exit`
//! (SPEC.md §4.17): who made whom, what each ran, how it ended. Entries are taken in the
//! order of their `at` (the kernel's time), not of `seq`: the kernel side reports without
//! holding the process, so its entries may be recorded after what the process then did.
//!
//! A pid names one process from its fork (or first exec) to its exit; a pid the kernel hands
//! out again later is another process here.
use super::session::Item;
use crate::ledger::Entry;
use std::collections::HashMap;

/// One program a process ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Seq of the `process_exec` entry.
    pub seq: u64,
    /// The program's path.
    pub path: String,
    /// Its arguments, as recorded.
    pub argv: Vec<String>,
    /// The working directory, when recorded.
    pub cwd: Option<String>,
    /// When.
    pub at: String,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Seq of the `process_exit` entry.
    pub seq: u64,
    /// Exit status, when it exited.
    pub code: Option<u8>,
    /// The signal that killed it, when one did.
    pub signal: Option<u8>,
    /// When.
    pub at: String,
}

impl Exit {
    /// `exit 0`, `signal 9`.
    pub fn describe(&self) -> String {
        crate::ledger::exit_words(self.code, self.signal).unwrap_or_else(|| "ended".into())
    }
}

/// One process of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its pid (the kernel's).
    pub pid: u32,
    /// Its parent, when recorded.
    pub ppid: Option<u32>,
    /// When it was made (its fork), when recorded.
    pub forked_at: Option<String>,
    /// The programs it ran, in order.
    pub execs: Vec<Exec>,
    /// How it ended, when recorded.
    pub exit: Option<Exit>,
}

impl Process {
    /// When it began: its fork, else its first exec.
    pub fn started(&self) -> &str {
        self.forked_at
            .as_deref()
            .or(self.execs.first().map(|e| e.at.as_str()))
            .unwrap_or("")
    }

    /// Whether it existed at `ts` (it had begun and not ended).
    pub fn alive_at(&self, ts: &str) -> bool {
        self.started() <= ts && self.exit.as_ref().is_none_or(|e| e.at.as_str() >= ts)
    }

    /// The program it ran last (what it was when it ended).
    pub fn last_exec(&self) -> Option<&Exec> {
        self.execs.last()
    }
}

/// Every process of a session.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    /// In the order they began.
    pub list: Vec<Process>,
    by_pid: HashMap<u32, Vec<usize>>,
}

impl Processes {
    /// Reads them from a session's entries.
    pub fn from_items(items: &[Item]) -> Processes {
        let mut events: Vec<&Item> = items
            .iter()
            .filter(|i| {
                matches!(
                    i.entry,
                    Entry::ProcessFork(_) | Entry::ProcessExec(_) | Entry::ProcessExit(_)
                )
            })
            .collect();
        let at = |i: &Item| match &i.entry {
            Entry::ProcessFork(f) => f.at.clone(),
            Entry::ProcessExec(x) => x.at.clone(),
            Entry::ProcessExit(x) => x.at.clone(),
            _ => String::new(),
        };
        events.sort_by_cached_key(|i| (at(i), i.seq));
        let mut p = Processes::default();
        for item in events {
            match &item.entry {
                Entry::ProcessFork(f) => {
                    p.begin(Process {
                        pid: f.pid,
                        ppid: Some(f.ppid),
                        forked_at: Some(f.at.clone()),
                        execs: Vec::new(),
                        exit: None,
                    });
                }
                Entry::ProcessExec(x) => {
                    let exec = Exec {
                        seq: item.seq,
                        path: x.path.clone(),
                        argv: x.argv.clone(),
                        cwd: x.cwd.clone(),
                        at: x.at.clone(),
                    };
                    let k = match p.running(x.pid) {
                        Some(k) => k,
                        // Made before the session saw it (the session's first process).
                        None => p.begin(Process {
                            pid: x.pid,
                            ppid: Some(x.ppid),
                            forked_at: None,
                            execs: Vec::new(),
                            exit: None,
                        }),
                    };
                    let proc = &mut p.list[k];
                    proc.ppid = Some(x.ppid);
                    proc.execs.push(exec);
                }
                Entry::ProcessExit(x) => {
                    let k = match p.running(x.pid) {
                        Some(k) => k,
                        None => p.begin(Process {
                            pid: x.pid,
                            ppid: None,
                            forked_at: None,
                            execs: Vec::new(),
                            exit: None,
                        }),
                    };
                    p.list[k].exit = Some(Exit {
                        seq: item.seq,
                        code: x.code,
                        signal: x.signal,
                        at: x.at.clone(),
                    });
                }
                _ => {}
            }
        }
        p
    }

    fn begin(&mut self, process: Process) -> usize {
        let k = self.list.len();
        self.by_pid.entry(process.pid).or_default().push(k);
        self.list.push(process);
        k
    }

    /// The latest process with `pid` that has not ended.
    fn running(&self, pid: u32) -> Option<usize> {
        self.by_pid
            .get(&pid)?
            .iter()
            .rev()
            .copied()
            .find(|&k| self.list[k].exit.is_none())
    }

    /// The process `pid` was at `ts` (index into `list`), or the latest with that pid that had
    /// begun by then.
    pub fn at(&self, pid: u32, ts: &str) -> Option<usize> {
        let ks = self.by_pid.get(&pid)?;
        ks.iter()
            .rev()
            .copied()
            .find(|&k| self.list[k].alive_at(ts))
            .or_else(|| {
                ks.iter()
                    .rev()
                    .copied()
                    .find(|&k| self.list[k].started() <= ts)
            })
    }

    /// The parent of `list[k]`, as it was when `list[k]` began.
    pub fn parent(&self, k: usize) -> Option<usize> {
        let p = &self.list[k];
        self.at(p.ppid?, p.started()).filter(|&j| j != k)
    }

    /// Whether `list[k]` descends (strictly) from `list[ancestor]`.
    pub fn descends_from(&self, k: usize, ancestor: usize) -> bool {
        let mut cur = k;
        // Bounded: a parent always began before its child, so the walk cannot loop, but a
        // malformed record could; the length of the list bounds any honest chain.
        for _ in 0..self.list.len() {
            match self.parent(cur) {
                Some(j) if j == ancestor => return true,
                Some(j) => cur = j,
                None => return false,
            }
        }
        false
    }

    /// Whether the list is empty (no process entries in the session).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
