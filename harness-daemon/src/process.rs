//! What the enclosed processes ran: the process programs' reports (`harness-ebpf`
//! `process.rs`: fork, exec, exit of every enclosed process) turned into the session's
//! `process_fork`, `process_exec` and `process_exit` entries (SPEC.md §4.17).
//!
//! The kernel side reports and never waits: a process is not held until its entry is durable
//! (there are no bytes to hold back). What the ring buffer had no room for is counted there and
//! said in every live session's ledger, so a gap in the record is never silent.
use crate::ledger::{canon, Entry, ProcessExec, ProcessExit, ProcessFork};
use harness_common::{process, ExecEvent, ProcessEvent, ARGV_MAX};

/// One report of the process programs, read from the ring buffer's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `ppid` made `pid`.
    Fork(ProcessEvent),
    /// `pid` started a program.
    Exec {
        /// Who, when, how long the arguments are.
        head: ProcessEvent,
        /// The path given to `execve`.
        path: Vec<u8>,
        /// The arguments' bytes that were read (each NUL-terminated).
        argv: Vec<u8>,
    },
    /// `pid` ended.
    Exit(ProcessEvent),
}

impl Report {
    /// Reads one ring buffer record; `None` when it is not one the programs write.
    pub fn read(item: &[u8]) -> Option<Report> {
        if item.len() < std::mem::size_of::<ProcessEvent>() {
            return None;
        }
        // SAFETY: at least a whole ProcessEvent is there (length checked above); it is plain
        // old data, read unaligned from the ring's bytes.
        let head: ProcessEvent =
            unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ProcessEvent>()) };
        match head.kind {
            process::FORK => Some(Report::Fork(head)),
            process::EXIT => Some(Report::Exit(head)),
            process::EXEC if item.len() >= std::mem::size_of::<ExecEvent>() => {
                let path_at = std::mem::offset_of!(ExecEvent, path);
                let argv_at = std::mem::offset_of!(ExecEvent, argv);
                let path = &item[path_at..argv_at];
                let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
                let read = (head.argv_read as usize).min(ARGV_MAX);
                Some(Report::Exec {
                    head,
                    path: path.to_vec(),
                    argv: item[argv_at..argv_at + read].to_vec(),
                })
            }
            _ => None,
        }
    }

    /// The session cgroup the report came from.
    pub fn cgroup_id(&self) -> u64 {
        match self {
            Report::Fork(head) | Report::Exit(head) | Report::Exec { head, .. } => head.cgroup_id,
        }
    }

    /// The entry that records it. `clock` turns the kernel's monotonic time into wall-clock
    /// time, `redact` applies SPEC §7 to the arguments, and `cwd` finds the working directory
    /// of a process while it still exists.
    pub fn entry(
        &self,
        clock: &Clock,
        redact: impl Fn(&[String]) -> Vec<String>,
        cwd: impl Fn(u32) -> Option<String>,
    ) -> Entry {
        match self {
            Report::Fork(head) => Entry::ProcessFork(ProcessFork {
                pid: head.pid,
                ppid: head.ppid,
                at: clock.at(head.time_ns),
            }),
            Report::Exec { head, path, argv } => {
                let (args, cut) = split_argv(argv, head.argv_len as usize);
                Entry::ProcessExec(ProcessExec {
                    pid: head.pid,
                    ppid: head.ppid,
                    uid: head.uid,
                    path: String::from_utf8_lossy(path).into_owned(),
                    argv: redact(&args),
                    argv_truncated: cut,
                    cwd: cwd(head.pid),
                    at: clock.at(head.time_ns),
                })
            }
            Report::Exit(head) => {
                let (code, signal, core_dumped) = wait_status(head.exit_code);
                Entry::ProcessExit(ProcessExit {
                    pid: head.pid,
                    code,
                    signal,
                    core_dumped,
                    at: clock.at(head.time_ns),
                })
            }
        }
    }
}

/// The arguments in `read` (each NUL-terminated, as a program's stack holds them), and whether
/// they are fewer than all `total` bytes of them. A cut last argument is kept as far as it
/// was read.
pub fn split_argv(read: &[u8], total: usize) -> (Vec<String>, bool) {
    let cut = read.len() < total;
    let mut args: Vec<String> = read
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // Every whole argument ends with a NUL, so a complete read leaves one empty piece after
    // the last; a cut read leaves the cut argument there instead.
    if !cut || args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    (args, cut)
}

/// A wait status (`code << 8 | signal`, `0x80` set for a core dump) as exit code, killing
/// signal and whether it dumped core.
pub fn wait_status(status: u32) -> (Option<u8>, Option<u8>, bool) {
    let signal = (status & 0x7f) as u8;
    if signal == 0 {
        (Some(((status >> 8) & 0xff) as u8), None, false)
    } else {
        (None, Some(signal), status & 0x80 != 0)
    }
}

/// Turns `CLOCK_MONOTONIC` readings into wall-clock time, by the distance between the two
/// clocks measured when it was made (re-made per batch, so a wall-clock step shows at once).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Clock {
    /// Measures the two clocks now.
    pub fn now() -> Clock {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .unwrap_or(0);
        let real = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        Clock {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    /// Wall-clock time of a monotonic reading, in the envelope's `ts` format.
    pub fn at(&self, monotonic_ns: u64) -> String {
        let real = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(real)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
        canon::format_ts(t)
    }
}

/// The working directory of `pid`, if it still exists (`/proc/PID/cwd`).
pub fn cwd_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_split_at_their_terminators() {
        assert_eq!(
            split_argv(b"sh\0-c\0curl x\0", 13),
            (vec!["sh".into(), "-c".into(), "curl x".into()], false)
        );
        // Cut inside the last argument: it is kept as far as read.
        assert_eq!(
            split_argv(b"sh\0-c\0cur", 14),
            (vec!["sh".into(), "-c".into(), "cur".into()], true)
        );
        // Cut right after a terminator.
        assert_eq!(
            split_argv(b"sh\0-c\0", 14),
            (vec!["sh".into(), "-c".into()], true)
        );
        assert_eq!(split_argv(b"", 0), (vec![], false));
        // An empty argument is an argument.
        assert_eq!(
            split_argv(b"printf\0\0", 8),
            (vec!["printf".into(), "".into()], false)
        );
        // Not UTF-8: replaced, not lost.
        assert_eq!(split_argv(b"a\xff\0", 3).0, vec!["a\u{fffd}".to_string()]);
    }

    #[test]
    fn wait_statuses_say_code_or_signal() {
        assert_eq!(wait_status(0), (Some(0), None, false));
        assert_eq!(wait_status(7 << 8), (Some(7), None, false));
        assert_eq!(wait_status(9), (None, Some(9), false));
        assert_eq!(wait_status(0x80 | 11), (None, Some(11), true));
    }

    #[test]
    fn an_exec_report_reads_back_from_ring_bytes() {
        let mut ev = ExecEvent {
            head: ProcessEvent {
                kind: process::EXEC,
                pid: 42,
                ppid: 7,
                uid: 1000,
                exit_code: 0,
                argv_len: 9,
                argv_read: 9,
                reserved: 0,
                cgroup_id: 99,
                time_ns: 1_000_000_000,
            },
            path: [0; harness_common::EXEC_PATH_MAX],
            argv: [0; ARGV_MAX],
        };
        ev.path[..8].copy_from_slice(b"/bin/env");
        ev.argv[..9].copy_from_slice(b"env\0K=V1\0");
        // SAFETY: ExecEvent is plain old data; viewing it as bytes is how the ring holds it.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ExecEvent).cast::<u8>(),
                std::mem::size_of::<ExecEvent>(),
            )
        };
        let report = Report::read(bytes).unwrap();
        assert_eq!(report.cgroup_id(), 99);
        let clock = Clock {
            realtime_minus_monotonic_ns: 1_700_000_000_000_000_000,
        };
        let entry = report.entry(&clock, |a| a.to_vec(), |_| Some("/w".into()));
        let Entry::ProcessExec(exec) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!(exec.path, "/bin/env");
        assert_eq!(exec.argv, ["env", "K=V1"]);
        assert_eq!((exec.pid, exec.ppid, exec.uid), (42, 7, 1000));
        assert_eq!(exec.at, "2023-11-14T22:13:21.000000Z");
        assert!(!exec.argv_truncated);
        assert!(Report::read(&bytes[..40]).is_none());
    }
}
