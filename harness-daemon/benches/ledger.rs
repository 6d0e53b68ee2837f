//! Ledger benchmark: group commit against a naive fsync-per-entry writer, measured in the same
//! run on the same disk, with 1, 16 and 256 concurrent submitters; then `verify` speed.
//!
//!     cargo bench -p harness-daemon --bench ledger
//!
//! Sizes (environment): HARNESS_BENCH_ENTRIES (group commit entries per run, default 20000),
//! HARNESS_BENCH_NAIVE_ENTRIES (naive writer entries per run, default 2000),
//! HARNESS_BENCH_VERIFY_ENTRIES (default 1000000), HARNESS_BENCH_GARBAGE_LINES (default
//! 200000), HARNESS_BENCH_GARBAGE_MB (default 300), HARNESS_BENCH_DIR (default: temp dir).
//! Targets on a 2-core machine: group commit ≥ 10× naive at 256 submitters; verify ≥ 1,000,000
//! entries/s (issue 13); `harness verify` on garbage linear (the big file's lines/s within 2× of the
//! small one's) with a peak RSS far below the file's size.
use harness::ledger::verify::{verify_path, VerifyOptions};
use harness::ledger::*;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: u64) -> Entry {
    Entry::StreamChunk(StreamChunk {
        conn: i % 97,
        exchange: i,
        direction: Direction::Down,
        index: i,
        body: Body::from_bytes(
            b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hello, world\"}}\n\n",
        ),
        fin: false,
        trailers: Vec::new(),
    })
}

fn session_open() -> SessionOpen {
    SessionOpen {
        command: vec!["bench".into()],
        uid: 0,
        gid: 0,
        cgroup: "/bench".into(),
        policy_sha256: String::new(),
        ca_fingerprint: None,
        software: "harness bench".into(),
        hostname: "bench".into(),
    }
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(total: u64, elapsed: Duration, mut lat: Vec<Duration>) -> Run {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    Run {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// Submits `total` entries from `submitters` tasks through the group-commit writer.
async fn group(dir: &Path, submitters: u64, total: u64) -> Run {
    let ledger = Ledger::open(dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let each = total / submitters;
    let start = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|s| {
            let w = w.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(each as usize);
                for i in 0..each {
                    let t = Instant::now();
                    w.append(entry(s * each + i)).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();
    summarize(each * submitters, elapsed, lat)
}

/// The baseline: the same canonical, chained entries, but each written and fdatasync'd alone
/// under a lock (what a writer without group commit does).
struct Naive {
    file: File,
    seq: u64,
    prev: Hash,
    id: ulid::Ulid,
}

async fn naive(dir: &Path, submitters: u64, total: u64) -> Run {
    let id = ulid::Ulid::new();
    let path = dir.join(format!("naive-{id}.log"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .unwrap();
    let w = Arc::new(Mutex::new(Naive {
        file,
        seq: 0,
        prev: genesis(&id),
        id,
    }));
    let each = (total / submitters).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|s| {
            let w = w.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(each as usize);
                for i in 0..each {
                    let t = Instant::now();
                    let w = w.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut n = w.lock().unwrap();
                        let ts = format_ts(time::OffsetDateTime::now_utc());
                        let mut line =
                            canonical_entry(&entry(s * each + i), &n.id, n.seq, &ts, &n.prev)
                                .unwrap();
                        n.prev = sha256(&line);
                        n.seq += 1;
                        line.push(b'\n');
                        n.file.write_all(&line).unwrap();
                        n.file.sync_data().unwrap();
                    })
                    .await
                    .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    summarize(each * submitters, start.elapsed(), lat)
}

fn fmt_d(d: Duration) -> String {
    if d.as_micros() < 10_000 {
        format!("{}µs", d.as_micros())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let base: PathBuf = std::env::var_os("HARNESS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("harness-ledger-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&base).unwrap();
    let group_n = env("HARNESS_BENCH_ENTRIES", 20_000);
    let naive_n = env("HARNESS_BENCH_NAIVE_ENTRIES", 2_000);
    let verify_n = env("HARNESS_BENCH_VERIFY_ENTRIES", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(512)
        .enable_all()
        .build()
        .unwrap();
    println!("ledger benchmark in {}", base.display());
    println!(
        "{:>10} | {:>28} | {:>28} | {:>9}",
        "submitters", "group commit: e/s  p50  p99", "naive fsync: e/s  p50  p99", "ratio"
    );
    let mut ratio_256 = 0.0;
    for submitters in [1u64, 16, 256] {
        let g = rt.block_on(group(
            &base.join(format!("group-{submitters}")),
            submitters,
            group_n,
        ));
        let ndir = base.join(format!("naive-{submitters}"));
        std::fs::create_dir_all(&ndir).unwrap();
        let n = rt.block_on(naive(&ndir, submitters, naive_n));
        let ratio = g.per_sec / n.per_sec;
        if submitters == 256 {
            ratio_256 = ratio;
        }
        println!(
            "{submitters:>10} | {:>10.0} {:>8} {:>8} | {:>10.0} {:>8} {:>8} | {:>8.1}×",
            g.per_sec,
            fmt_d(g.p50),
            fmt_d(g.p99),
            n.per_sec,
            fmt_d(n.p50),
            fmt_d(n.p99),
            ratio
        );
    }
    println!(
        "group commit vs naive at 256 submitters: {ratio_256:.1}× (target ≥ 10×: {})",
        if ratio_256 >= 10.0 { "met" } else { "NOT MET" }
    );

    // Verify speed over a large session written by the real writer.
    let vdir = base.join("verify");
    let t = Instant::now();
    rt.block_on(group(&vdir, 256, verify_n));
    let written = t.elapsed();
    let t = Instant::now();
    let report = verify_path(&vdir, &VerifyOptions::default()).unwrap();
    let took = t.elapsed();
    assert!(
        report.intact(),
        "{:?}",
        &report.problems[..report.problems.len().min(5)]
    );
    let per_sec = report.entries() as f64 / took.as_secs_f64();
    // The floor beside it: reading the same file and hashing each line, nothing parsed.
    let file = &report.sessions[0].file;
    let t = Instant::now();
    let bytes = std::fs::read(file).unwrap();
    let mut lines = 0u64;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        std::hint::black_box(<sha2::Sha256 as sha2::Digest>::digest(line));
        lines += 1;
    }
    let floor = lines as f64 / t.elapsed().as_secs_f64();
    println!(
        "verify: {} entries ({} MB) in {:.2}s = {:.0} entries/s ({:.2}x of reading and hashing them, {:.0} lines/s); writing them took {:.1}s",
        report.entries(),
        std::fs::metadata(file).unwrap().len() / 1_000_000,
        took.as_secs_f64(),
        per_sec,
        per_sec / floor,
        floor,
        written.as_secs_f64()
    );
    println!(
        "\nissue 13 goals (ledger):\n  {:<62} {:>22}  {:<34} {}",
        "verify speed, 2 cores",
        format!("{per_sec:.0} entries/s"),
        "≥ 1,000,000 entries/s",
        if per_sec >= 1_000_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    garbage(&base);
    if std::env::var_os("HARNESS_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
}

/// `harness verify` (the binary) on session files of garbage lines: a small one and a big one,
/// lines per second of each (the baseline is the small file) and the peak RSS of the big run.
fn garbage(base: &Path) {
    let small_n = env("HARNESS_BENCH_GARBAGE_LINES", 200_000);
    let big_mb = env("HARNESS_BENCH_GARBAGE_MB", 300);
    let write = |name: &str, lines: u64| -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.jsonl", ulid::Ulid::new()));
        let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
        for i in 0..lines {
            writeln!(f, "garbage {i:>12}: no entry").unwrap();
        }
        f.flush().unwrap();
        dir
    };
    // 30 bytes a line.
    let big_n = big_mb * 1_000_000 / 30;
    let small = write("garbage-small", small_n);
    let big = write("garbage-big", big_n);
    // Time and peak RSS (the child's own VmHWM, read until it exits: its rusage would also
    // count this process's pages, which it holds between fork and exec).
    let run = |dir: &Path| -> (Duration, u64) {
        let t = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("verify")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        let code = loop {
            if let Some(hwm) = std::fs::read_to_string(&status).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            }) {
                peak_kib = peak_kib.max(hwm);
            }
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(code, Some(1), "garbage is not intact");
        (t.elapsed(), peak_kib)
    };
    let (small_t, _) = run(&small);
    let (big_t, peak_kib) = run(&big);
    let small_rate = small_n as f64 / small_t.as_secs_f64();
    let big_rate = big_n as f64 / big_t.as_secs_f64();
    let ratio = small_rate / big_rate;
    println!(
        "verify garbage: {small_n} lines in {:.2}s ({small_rate:.0} lines/s); {big_n} lines ({big_mb} MB) in {:.2}s ({big_rate:.0} lines/s), peak RSS {} MB; slowdown per line {ratio:.2}× (target ≤ 2×, linear: {})",
        small_t.as_secs_f64(),
        big_t.as_secs_f64(),
        peak_kib / 1024,
        if ratio <= 2.0 { "met" } else { "NOT MET" }
    );
}
