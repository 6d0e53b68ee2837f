//! What the ledger creates is never writable by others, whatever the umask: directories 0755
//! (`keys/` 0700), files 0644, keys 0600. One test in its own process, because the umask is
//! the process's.
mod ledger_support;

use harness::ledger::*;
use ledger_support::*;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn what_the_ledger_creates_is_private_even_with_umask_0() {
    let dir = scratch("umask0").join("ledger");
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let body = ledger.body(&vec![7u8; INLINE_MAX + 1]).unwrap();
    w.append(Entry::HttpResponseBody(HttpBody {
        conn: 1,
        exchange: 0,
        body,
        trailers: vec![],
    }))
    .await
    .unwrap();
    w.close(close()).await.unwrap();
    nix::sys::stat::umask(old);
    let euid = nix::unistd::geteuid().as_raw();
    let mut checked = 0;
    let mut check = |p: &Path, want: u32| {
        assert_eq!(mode(p), want, "{}: mode {:04o}", p.display(), mode(p));
        assert_eq!(std::fs::metadata(p).unwrap().uid(), euid, "{}", p.display());
        checked += 1;
    };
    check(&dir, 0o755);
    for sub in ["blobs", "checkpoints", "recovery"] {
        check(&dir.join(sub), 0o755);
    }
    check(&dir.join("keys"), 0o700);
    check(&dir.join(SIGNING_KEY), 0o600);
    check(&dir.join(FINGERPRINT_KEY), 0o600);
    check(&dir.join(VERIFIER_KEY), 0o644);
    check(&ledger.session_path(&w.id()), 0o644);
    let cps = dir.join("checkpoints").join(w.id().to_string());
    check(&cps, 0o755);
    for e in std::fs::read_dir(&cps)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("blobs")).unwrap())
    {
        check(&e.unwrap().path(), 0o644);
    }
    assert!(checked >= 12, "a checkpoint and a blob were written");
    // And the ledger it made passes its own checks.
    Ledger::open(&dir).unwrap();
}
