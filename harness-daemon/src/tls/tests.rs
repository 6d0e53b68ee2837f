//! Real TLS handshakes over 127.0.0.1: a tokio-rustls server resolving leaves with
//! `SniResolver`, against a rustls client trusting only the harness CA and (when python3 is
//! there) Python's `ssl` with strict X.509 checks, through the bundle and through the mount
//! namespace.
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;

use rustls_pki_types::ServerName;

use super::test_support::{client_config, fetch, serve, test_ca};
use super::{LeafMinter, TrustBundle, TrustMounts};

const BOTH: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[tokio::test]
async fn handshake_with_sni_negotiates_h2_or_http11() {
    let (ca, dir) = test_ca("hs-sni");
    let minter = Arc::new(LeafMinter::new(ca));
    let addr = serve(minter.clone()).await;
    let name = ServerName::try_from("api.anthropic.com").unwrap();

    let (alpn, said) = fetch(addr, name.clone(), client_config(minter.ca(), &BOTH))
        .await
        .expect("client trusting only the harness CA must accept the leaf");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(said, "h2 api.anthropic.com\n");

    let (alpn, said) = fetch(
        addr,
        name.clone(),
        client_config(minter.ca(), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(said, "http/1.1 api.anthropic.com\n");

    let (alpn, said) = fetch(addr, name, client_config(minter.ca(), &[]))
        .await
        .unwrap();
    assert_eq!(alpn, None);
    assert_eq!(said, "none api.anthropic.com\n");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn handshake_without_sni_presents_a_leaf_for_the_destination_ip() {
    let (ca, dir) = test_ca("hs-ip");
    let minter = Arc::new(LeafMinter::new(ca));
    let addr = serve(minter.clone()).await;
    // rustls sends no SNI when connecting to an IP address.
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let (alpn, said) = fetch(addr, name.clone(), client_config(minter.ca(), &BOTH))
        .await
        .expect("leaf for 127.0.0.1 must verify");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(said, "h2 no-sni\n");
    let (alpn, _) = fetch(addr, name, client_config(minter.ca(), &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn client_trusting_another_ca_rejects_the_leaf() {
    let (ca, dir) = test_ca("hs-other");
    let (other, other_dir) = test_ca("hs-other-ca");
    let minter_ca_der = ca.certificate_der().clone();
    let addr = serve(Arc::new(LeafMinter::new(ca))).await;
    let name = ServerName::try_from("api.anthropic.com").unwrap();
    let err = fetch(addr, name, client_config(&other, &BOTH))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_ne!(
        x509_parser::parse_x509_certificate(other.certificate_der())
            .unwrap()
            .1
            .subject(),
        x509_parser::parse_x509_certificate(minter_ca_der.as_ref())
            .unwrap()
            .1
            .subject(),
        "two CAs from one host must not share a subject"
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(other_dir).unwrap();
}

/// Python's `ssl` with the flags Python 3.13 turns on by default (VERIFY_X509_STRICT, which
/// rejects a leaf without AKI, and VERIFY_X509_PARTIAL_CHAIN). `cafile` None: default trust.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, host, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile or None)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT | getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("127.0.0.1", port)) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        print(tls.selected_alpn_protocol(), data.decode().strip())
"#;

fn python3_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import ssl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn run_python(mut cmd: std::process::Command) -> (bool, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn python_ssl_with_strict_checks_accepts_leaves_through_the_bundle() {
    if !python3_available() {
        eprintln!("=== SKIPPED python_ssl_with_strict_checks: no python3 with ssl ===");
        return;
    }
    let (ca, dir) = test_ca("py-bundle");
    let bundle = TrustBundle::build(ca.certificate_pem(), &dir.join("bundle.pem")).unwrap();
    let addr = serve(Arc::new(LeafMinter::new(ca))).await;
    for (host, expect) in [
        ("api.openai.com", "h2 h2 api.openai.com"),
        // Python sends no SNI for an IP address: the leaf is minted for the destination IP.
        ("127.0.0.1", "h2 h2 no-sni"),
    ] {
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", PY_CLIENT, &addr.port().to_string(), host])
            .arg(bundle.path());
        let (ok, out) = run_python(cmd).await;
        assert!(
            ok && out.trim() == expect,
            "python client for {host}: {out}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn python_default_trust_in_the_mount_namespace_accepts_leaves() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("=== SKIPPED python_default_trust_in_the_mount_namespace: needs root ===");
        return;
    }
    if !python3_available() {
        eprintln!("=== SKIPPED python_default_trust_in_the_mount_namespace: no python3 ===");
        return;
    }
    let (ca, dir) = test_ca("py-ns");
    let bundle = TrustBundle::build(ca.certificate_pem(), &dir.join("bundle.pem")).unwrap();
    let mounts = TrustMounts::discover(bundle.path()).unwrap();
    let addr = serve(Arc::new(LeafMinter::new(ca))).await;
    let python = |enclosed: bool| {
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-c",
            PY_CLIENT,
            &addr.port().to_string(),
            "api.example.test",
            "",
        ]);
        // No environment variables: only the system paths can make Python trust the CA.
        for (name, _) in bundle.env() {
            cmd.env_remove(name);
        }
        cmd.env_remove("SSL_CERT_DIR");
        if enclosed {
            mounts.clone().install(&mut cmd);
        }
        cmd
    };
    let (ok, out) = run_python(python(false)).await;
    assert!(
        !ok && out.contains("CERTIFICATE_VERIFY_FAILED"),
        "outside: {out}"
    );
    let (ok, out) = run_python(python(true)).await;
    assert!(
        ok && out.trim() == "h2 h2 api.example.test",
        "inside: {out}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
