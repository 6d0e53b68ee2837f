//! Through harness vs direct, in the same run, against the same test peers (in the world, the
//! bench's own network namespace over a veth, which both paths cross), beside the cost of one
//! fdatasync on the ledger's file system, measured now. Needs root (it runs `harness run`).
//!
//! Plain HTTP and TLS, each at 1 and 64 clients; SSE first-byte and per-event release
//! (events the peer stamps with the time it sent them); harness's peak RSS with many
//! connections open while a large body passes. Ends with issue 13's goals, each measured
//! against its baseline in this run, met or NOT met.
//!
//! Sizes: HARNESS_BENCH_REQUESTS (default 10000 per run: CPU is read in clock ticks, and
//! start-up, some 200 ms of it, is subtracted), HARNESS_BENCH_SSE_ROUNDS (default 50),
//! HARNESS_BENCH_SSE_EVENTS (default 20 per stamped stream), HARNESS_BENCH_CONNECTIONS
//! (default 1000 held), HARNESS_BENCH_MB (default 1024 MiB passing while they are held),
//! HARNESS_BENCH_UPLOAD_MB (default 100 each way over TLS).
use harness_tests::peers::{Peer, TestCa, DEFAULT_EVENT_DELAY};
use harness_tests::{dns_server, harness_bin, temp_dir, world};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin(name: &str) -> PathBuf {
    harness_bin().with_file_name(name)
}

struct Bench {
    ca: PathBuf,
    dns: String,
    dir: PathBuf,
}

impl Bench {
    /// Runs `loadgen ARGS` directly (trusting the test CA) and returns its JSON line.
    fn direct(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(bin("loadgen"))
            .args(args)
            .env("SSL_CERT_FILE", &self.ca)
            .output()
            .expect("loadgen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("loadgen JSON")
    }

    /// Runs `loadgen ARGS` inside `harness run` (trusting what harness gives it); also the CPU
    /// time harness itself (daemon and recorder, not the enclosed loadgen) spent.
    fn enclosed(&self, args: &[&str]) -> (serde_json::Value, Duration, u64) {
        let out = self.harness(&[&[bin("loadgen").to_str().unwrap()], args].concat(), false);
        let v = serde_json::from_slice(&out.stdout).expect("loadgen JSON");
        (v, out.cpu, out.switches)
    }

    fn harness(&self, command: &[&str], measure_rss: bool) -> Output {
        let ledger = self.dir.join(format!("ledger-{}", ulid()));
        let mut child = Command::new(harness_bin())
            .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
            .arg(&ledger)
            .args([
                "--upstream-ca",
                self.ca.to_str().unwrap(),
                "--dns-upstream",
                &self.dns,
            ])
            .arg("--")
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("harness run");
        let mut peak_kib = 0;
        let mut cpu = Duration::ZERO;
        let mut switches = 0;
        while child.try_wait().expect("wait").is_none() {
            if measure_rss {
                peak_kib = peak_kib.max(harness_tests::vm_hwm_kib(child.id()));
            }
            cpu = cpu.max(cpu_time(child.id()));
            switches = switches.max(context_switches(child.id()));
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("harness run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Output {
            stdout: out.stdout,
            peak_kib,
            cpu,
            switches,
        }
    }
}

struct Output {
    stdout: Vec<u8>,
    peak_kib: u64,
    /// User + system CPU time of the `harness run` process (its own threads, not the command),
    /// as last seen before it exited.
    cpu: Duration,
    /// Context switches of all its threads (voluntary and not), as last seen.
    switches: u64,
}

/// Context switches so far of every thread of process `pid` (each a sleep or a preemption: a
/// thread hop costs one on each side).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.ends_with("ctxt_switches")
                        .then(|| value.trim().parse::<u64>().ok())?
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// User + system CPU time of process `pid` so far (`/proc/PID/stat` fields 14 and 15).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn ulid() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// One write(4 KiB) + fdatasync on a file in `dir`: its p50 time (ms), and the CPU (µs,
/// user + system, of the thread that makes it) it costs on average. On a virtual disk the CPU is
/// large (the kicks to the device are VM exits), and it is the floor of what an exchange that
/// must wait for two fdatasyncs of its own can cost.
fn fdatasync_probe(dir: &Path) -> (f64, f64) {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    const N: u32 = 200;
    let cpu_before = thread_cpu();
    let mut times: Vec<f64> = (0..N)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let cpu_us = (thread_cpu() - cpu_before).as_secs_f64() * 1e6 / f64::from(N);
    times.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(path);
    (times[times.len() / 2], cpu_us)
}

/// User + system CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD asks for this thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// One of issue 13's goals: what was measured against what is asked.
struct Goal {
    what: String,
    measured: String,
    target: String,
    met: bool,
}

/// Direct and enclosed runs of `loadgen json` at one concurrency, and harness's CPU per
/// request beyond start-up.
struct Exchanges {
    direct: serde_json::Value,
    through: serde_json::Value,
    cpu_us: f64,
    /// harness's context switches per exchange, beyond start-up.
    switches: f64,
}

impl Exchanges {
    fn added_p50_ms(&self) -> f64 {
        f(&self.through, "p50_ms") - f(&self.direct, "p50_ms")
    }

    fn ratio(&self) -> f64 {
        f(&self.through, "rps") / f(&self.direct, "rps")
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("proxy bench: needs root (it runs `harness run`); skipped");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = temp_dir("bench");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ca = TestCa::create(dir.join("test-ca")).expect("test CA");
    let tls_peer = Peer::builder(&ca)
        .names(["api.example.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .expect("peer");
    let plain_peer = Peer::builder(&ca)
        .names(["plain.example.test"])
        .ip(world::addr(2))
        .plaintext()
        .spawn_in_thread()
        .expect("plaintext peer");
    let bench = Bench {
        ca: ca.cert_path(),
        dns: dns_server(world::addr(2)).to_string(),
        dir: dir.clone(),
    };
    let requests = env_or("HARNESS_BENCH_REQUESTS", 10_000);
    let (fsync, fsync_cpu_us) = fdatasync_probe(&dir);
    println!(
        "proxy bench: one write+fdatasync on the ledger's file system: p50 {fsync:.3} ms, {fsync_cpu_us:.0} µs CPU"
    );
    // What `harness run` costs with no traffic at all (engine start: eBPF load, CA, session
    // open and close), subtracted from the CPU per request below.
    let idle_run = bench.harness(&["/bin/true"], false);
    let (idle, idle_switches) = (idle_run.cpu, idle_run.switches);
    println!(
        "harness run of /bin/true (start, enclose, close): {:.0} ms CPU",
        idle.as_secs_f64() * 1000.0
    );
    println!(
        "{:<34} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "small JSON POSTs", "req/s", "ratio", "p50 ms", "p99 ms", "+p50 ms", "CPU µs/req", "cs/req"
    );
    let mut runs = std::collections::HashMap::new();
    for (scheme, peer) in [("http", &plain_peer), ("https", &tls_peer)] {
        for concurrency in [1u64, 64] {
            let url = peer.url("/v1/orders");
            let addr = peer.addr().to_string();
            let (c, n) = (concurrency.to_string(), requests.to_string());
            let args = ["json", url.as_str(), addr.as_str(), c.as_str(), n.as_str()];
            let direct = bench.direct(&args);
            let (through, cpu, switches) = bench.enclosed(&args);
            let run = Exchanges {
                direct,
                through,
                cpu_us: cpu.saturating_sub(idle).as_secs_f64() * 1e6 / requests as f64,
                switches: switches.saturating_sub(idle_switches) as f64 / requests as f64,
            };
            println!(
                "{:<34} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9} {:>10} {:>9}",
                format!("{scheme} direct, {concurrency} client(s)"),
                f(&run.direct, "rps"),
                "1.00x",
                f(&run.direct, "p50_ms"),
                f(&run.direct, "p99_ms"),
                "",
                "",
                ""
            );
            println!(
                "{:<34} {:>10.0} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>9.1}",
                format!("{scheme} through harness, {concurrency}"),
                f(&run.through, "rps"),
                format!("{:.2}x", run.ratio()),
                f(&run.through, "p50_ms"),
                f(&run.through, "p99_ms"),
                run.added_p50_ms(),
                run.cpu_us,
                run.switches,
            );
            runs.insert((scheme, concurrency), run);
        }
    }
    let mut goals = Vec::new();
    for (concurrency, limit) in [(64, 40.0), (1, 60.0)] {
        let cpu = runs[&("http", concurrency)].cpu_us;
        goals.push(Goal {
            what: format!("harness CPU per plain-HTTP exchange, c={concurrency}"),
            measured: format!("{cpu:.0} µs"),
            target: format!("≤ {limit:.0} µs"),
            met: cpu <= limit,
        });
    }
    // The CPU a lone client's exchange cannot go below: its two durable points are two
    // fdatasyncs nobody else shares (with many clients, group commit shares them).
    let fsync_floor = 2.0 * fsync_cpu_us;
    let floor_note = format!(
        "  (a lone client's exchange waits for two fdatasyncs of its own: {fsync_floor:.0} µs CPU \
         here, {} the c=1 goal; c=1 CPU is {:.1}x that floor)",
        if fsync_floor > 60.0 { "above" } else { "below" },
        runs[&("http", 1)].cpu_us / fsync_floor,
    );
    let ratio = runs[&("http", 64)].ratio();
    goals.push(Goal {
        what: "plain-HTTP throughput at c=64, of direct".into(),
        measured: format!("{ratio:.2}x"),
        target: "≥ 0.30x".into(),
        met: ratio >= 0.3,
    });
    // An exchange has two durable points — the request before it is forwarded, the response
    // before it is released — so two fdatasyncs are its floor.
    let added = runs[&("http", 1)].added_p50_ms();
    let floor = 2.0 * fsync + 0.1;
    goals.push(Goal {
        what: "added p50 latency, plain HTTP, c=1".into(),
        measured: format!("{added:.3} ms"),
        target: format!("≤ 2 × fdatasync + 0.1 = {floor:.3} ms"),
        met: added <= floor,
    });
    for concurrency in [1, 64] {
        let (tls, plain) = (
            runs[&("https", concurrency)].cpu_us,
            runs[&("http", concurrency)].cpu_us,
        );
        goals.push(Goal {
            what: format!("harness CPU with TLS on both sides, c={concurrency}"),
            measured: format!("{tls:.0} µs ({:.2}x plain)", tls / plain),
            target: format!("≤ 2 × plain = {:.0} µs", 2.0 * plain),
            met: tls <= 2.0 * plain,
        });
    }

    // Model streams: time to the first byte of an Anthropic SSE reply, then each event of a
    // stamped stream — how long after the peer sent it the client had it, and the spacing.
    let rounds = env_or("HARNESS_BENCH_SSE_ROUNDS", 50).to_string();
    let url = tls_peer.url("/v1/messages");
    let addr = tls_peer.addr().to_string();
    let args = ["sse", url.as_str(), addr.as_str(), rounds.as_str()];
    let direct = bench.direct(&args);
    let (through, _, _) = bench.enclosed(&args);
    println!(
        "time to first SSE byte (p50): direct {:.3} ms, harness {:.3} ms, added {:.3} ms ({:.2}x)",
        f(&direct, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms") - f(&direct, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms") / f(&direct, "ttfb_p50_ms"),
    );
    let events = env_or("HARNESS_BENCH_SSE_EVENTS", 20);
    let url = tls_peer.url(&format!("/stamped/{events}"));
    let rounds = (env_or("HARNESS_BENCH_SSE_ROUNDS", 50) / 5)
        .max(1)
        .to_string();
    let args = ["events", url.as_str(), addr.as_str(), rounds.as_str()];
    let direct = bench.direct(&args);
    let (through, _, _) = bench.enclosed(&args);
    let release = f(&through, "latency_p50_ms") - f(&direct, "latency_p50_ms");
    println!(
        "SSE events {} ms apart (p50): sent → received direct {:.3} ms, harness {:.3} ms; spacing direct {:.3} ms, harness {:.3} ms (p99 {:.3})",
        DEFAULT_EVENT_DELAY.as_millis(),
        f(&direct, "latency_p50_ms"),
        f(&through, "latency_p50_ms"),
        f(&direct, "gap_p50_ms"),
        f(&through, "gap_p50_ms"),
        f(&through, "gap_p99_ms"),
    );
    goals.push(Goal {
        what: "SSE event released after it arrives (p50)".into(),
        measured: format!("{release:.3} ms"),
        target: format!("≤ fdatasync + 0.2 = {:.3} ms", fsync + 0.2),
        met: release <= fsync + 0.2,
    });
    // Kept: the median spacing within a tenth of a millisecond of the peer's.
    let spacing = f(&through, "gap_p50_ms") - f(&direct, "gap_p50_ms");
    goals.push(Goal {
        what: "SSE inter-event spacing kept (p50, vs direct)".into(),
        measured: format!("{spacing:+.3} ms"),
        target: "within ±0.1 ms".into(),
        met: spacing.abs() <= 0.1,
    });

    // Memory: many open connections while a large body passes.
    let connections = env_or("HARNESS_BENCH_CONNECTIONS", 1000);
    let mb = env_or("HARNESS_BENCH_MB", 1024);
    let url = plain_peer.url("/health");
    let addr = plain_peer.addr().to_string();
    let (c, b) = (connections.to_string(), (mb << 20).to_string());
    let loadgen = bin("loadgen");
    let command = [
        loadgen.to_str().unwrap(),
        "hold",
        url.as_str(),
        addr.as_str(),
        c.as_str(),
        b.as_str(),
    ];
    let t = Instant::now();
    let out = bench.harness(&command, true);
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loadgen JSON");
    let rss = out.peak_kib as f64 / 1024.0;
    println!(
        "{} connections held while {mb} MiB passed through harness ({:.1} s): harness peak RSS {rss:.0} MiB",
        held["held"],
        t.elapsed().as_secs_f64(),
    );
    goals.push(Goal {
        what: format!("harness peak RSS, {connections} connections open, {mb} MiB passing"),
        measured: format!("{rss:.0} MiB"),
        target: "≤ 64 MiB".into(),
        met: rss <= 64.0,
    });

    // The upload path (100 MB each way by default) as before, for its time.
    let mb = env_or("HARNESS_BENCH_UPLOAD_MB", 100);
    let size = mb * 1024 * 1024;
    let upload = dir.join("upload.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&upload).unwrap());
        let chunk = vec![0x5au8; 1024 * 1024];
        for _ in 0..mb {
            f.write_all(&chunk).unwrap();
        }
    }
    let script = format!(
        "/usr/bin/curl -sS -o /dev/null {} && /usr/bin/curl -sS -o /dev/null --data-binary @{} {}",
        tls_peer.url(&format!("/bytes/{size}")),
        upload.display(),
        tls_peer.url("/upload")
    );
    let t = Instant::now();
    let out = bench.harness(&["/bin/sh", "-c", &script], true);
    println!(
        "{mb} MB down + {mb} MB up over TLS through harness: {:.1} s, harness peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        out.peak_kib / 1024
    );

    println!("\nissue 13 goals (proxy):");
    for g in &goals {
        println!(
            "  {:<62} {:>22}  {:<34} {}",
            g.what,
            g.measured,
            g.target,
            if g.met { "met" } else { "NOT met" }
        );
    }
    println!("{floor_note}");
    drop((tls_peer, plain_peer));
    let _ = std::fs::remove_dir_all(&dir);
}
