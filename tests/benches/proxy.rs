//! Through harness vs direct, in the same run, against the same test peer (in the world, the
//! bench's own network namespace over a veth, which both paths cross): requests/s and p50/p99
//! latency of small JSON calls over TLS at 1 and 64 concurrent clients, added time to the first
//! SSE byte, and harness's resident memory while 100 MB pass each way. Beside them, the cost of
//! one fdatasync on the ledger's file system, measured now: the target is added p50 latency of
//! at most one fdatasync + 0.3 ms; since an exchange has two durable points (the request before
//! forwarding, the response before release), the bench also prints what is added beyond two
//! fdatasyncs. Needs root (it runs `harness run`).
//!
//! Sizes: HARNESS_BENCH_REQUESTS (default 2000 per concurrency level), HARNESS_BENCH_SSE_ROUNDS
//! (default 50), HARNESS_BENCH_MB (default 100).
use harness_tests::peers::{Peer, TestCa};
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
    fn enclosed(&self, args: &[&str]) -> (serde_json::Value, Duration) {
        let out = self.harness(&[&[bin("loadgen").to_str().unwrap()], args].concat(), false);
        let v = serde_json::from_slice(&out.stdout).expect("loadgen JSON");
        (v, out.cpu)
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
        while child.try_wait().expect("wait").is_none() {
            if measure_rss {
                peak_kib = peak_kib.max(harness_tests::vm_hwm_kib(child.id()));
            }
            cpu = cpu.max(cpu_time(child.id()));
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
        }
    }
}

struct Output {
    stdout: Vec<u8>,
    peak_kib: u64,
    /// User + system CPU time of the `harness run` process (its own threads, not the command),
    /// as last seen before it exited.
    cpu: Duration,
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

/// p50 of write(4 KiB) + fdatasync on a file in `dir`.
fn fdatasync_p50_ms(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    let mut times: Vec<f64> = (0..100)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(path);
    times[times.len() / 2]
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
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
    let peer = Peer::builder(&ca)
        .names(["api.example.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .expect("peer");
    let bench = Bench {
        ca: ca.cert_path(),
        dns: dns_server(world::addr(2)).to_string(),
        dir: dir.clone(),
    };
    let addr = peer.addr().to_string();
    let requests = env_or("HARNESS_BENCH_REQUESTS", 2000).to_string();
    let fsync = fdatasync_p50_ms(&dir);
    println!("proxy bench: one write+fdatasync on the ledger's file system: p50 {fsync:.3} ms");
    // What `harness run` costs with no traffic at all (engine start: eBPF load, CA, session
    // open and close), subtracted from the CPU per request below.
    let idle = bench.harness(&["/bin/true"], false).cpu;
    println!(
        "harness run of /bin/true (start, enclose, close): {:.0} ms CPU",
        idle.as_secs_f64() * 1000.0
    );
    println!(
        "{:<28} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "", "req/s", "ratio", "p50 ms", "p99 ms", "+p50 ms"
    );
    for concurrency in ["1", "64"] {
        let url = peer.url("/v1/orders");
        let args = [
            "json",
            url.as_str(),
            addr.as_str(),
            concurrency,
            requests.as_str(),
        ];
        let direct = bench.direct(&args);
        let (through, cpu) = bench.enclosed(&args);
        let added = f(&through, "p50_ms") - f(&direct, "p50_ms");
        for (label, v) in [
            (format!("direct, {concurrency} client(s)"), &direct),
            (format!("harness, {concurrency} client(s)"), &through),
        ] {
            println!(
                "{label:<28} {:>10.0} {:>10} {:>9.3} {:>9.3} {:>9}",
                f(v, "rps"),
                if std::ptr::eq(v, &through) {
                    format!("{:.2}x", f(&through, "rps") / f(&direct, "rps"))
                } else {
                    "1.00x".into()
                },
                f(v, "p50_ms"),
                f(v, "p99_ms"),
                if std::ptr::eq(v, &through) {
                    format!("{added:.3}")
                } else {
                    String::new()
                },
            );
        }
        println!(
            "  added p50 at {concurrency} client(s): {added:.3} ms; target ≤ fdatasync + 0.3 = {:.3} ms: {}",
            fsync + 0.3,
            if added <= fsync + 0.3 { "met" } else { "NOT met" }
        );
        // A recorded exchange needs two durable points by design — the request before it is
        // forwarded, the response before it is released — so two fdatasyncs are its floor;
        // what harness adds beyond them is its own cost.
        let beyond = added - 2.0 * fsync;
        println!(
            "  beyond the two fdatasyncs an exchange needs (request, response): {beyond:.3} ms; ≤ 0.3 ms: {}",
            if beyond <= 0.3 { "met" } else { "NOT met" }
        );
        // With every client always waiting on its answer, latency is concurrency / throughput
        // (Little's law) once a resource saturates: this says how much CPU harness needs.
        let n: f64 = requests.parse().unwrap_or(f64::NAN);
        println!(
            "  harness CPU beyond start-up: {:.0} µs per request ({:.2} s for {n:.0}); {concurrency} / req/s = {:.3} ms",
            cpu.saturating_sub(idle).as_secs_f64() * 1e6 / n,
            cpu.saturating_sub(idle).as_secs_f64(),
            concurrency.parse::<f64>().unwrap_or(f64::NAN) / f(&through, "rps") * 1000.0,
        );
    }
    let rounds = env_or("HARNESS_BENCH_SSE_ROUNDS", 50).to_string();
    let url = peer.url("/v1/messages");
    let args = ["sse", url.as_str(), addr.as_str(), rounds.as_str()];
    let direct = bench.direct(&args);
    let (through, _) = bench.enclosed(&args);
    println!(
        "time to first SSE byte (p50): direct {:.3} ms, harness {:.3} ms, added {:.3} ms ({:.2}x)",
        f(&direct, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms") - f(&direct, "ttfb_p50_ms"),
        f(&through, "ttfb_p50_ms") / f(&direct, "ttfb_p50_ms"),
    );
    let mb = env_or("HARNESS_BENCH_MB", 100);
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
        peer.url(&format!("/bytes/{size}")),
        upload.display(),
        peer.url("/upload")
    );
    let t = Instant::now();
    let out = bench.harness(&["/bin/sh", "-c", &script], true);
    println!(
        "{mb} MB down + {mb} MB up through harness: {:.1} s, harness peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        out.peak_kib / 1024
    );
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
}
