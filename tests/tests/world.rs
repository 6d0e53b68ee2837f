//! The world itself (the test network namespace every enclosure test puts its outside peers
//! in): its addresses, sockets made inside it, children run inside it, its separation from the
//! host's loopback, and the removal of worlds whose process died.
use harness_tests::{privileged, probe_bin, world};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

#[test]
fn addresses_are_test_hosts_of_one_subnet() {
    if !privileged("world addresses") {
        return;
    }
    let hosts: Vec<_> = world::HOSTS.map(world::addr).collect();
    let hosts6: Vec<_> = world::HOSTS.map(world::addr6).collect();
    for ip in hosts.iter().chain(&hosts6) {
        assert!(world::contains(*ip), "{ip}");
        assert!(!ip.is_loopback(), "{ip}");
    }
    let subnet = |ip: &std::net::IpAddr| ip.to_string().rsplit_once('.').unwrap().0.to_owned();
    assert!(hosts
        .iter()
        .all(|ip| subnet(ip) == subnet(&world::host_addr())));
    let mut distinct = hosts.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 8);
    assert!(world::name().starts_with(world::NETNS_PREFIX));
    assert!(std::path::Path::new("/run/netns")
        .join(world::name())
        .exists());
}

#[test]
fn sockets_made_in_the_world_serve_it_from_the_host() {
    if !privileged("world sockets") {
        return;
    }
    for (ip, host) in [
        (world::addr(5), world::host_addr()),
        (world::addr6(5), world::host_addr6()),
    ] {
        let listener = world::bind_tcp(SocketAddr::new(ip, 0)).unwrap();
        let at = listener.local_addr().unwrap();
        assert_eq!(at.ip(), ip);
        let mut client = TcpStream::connect_timeout(&at, Duration::from_secs(5)).unwrap();
        let (mut served, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), host, "the host's end of the veth calls");
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        let udp = world::bind_udp(SocketAddr::new(ip, 0)).unwrap();
        let here = UdpSocket::bind(SocketAddr::new(host, 0)).unwrap();
        here.send_to(b"dgram", udp.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"dgram"[..], here.local_addr().unwrap())
        );
    }
    // A world address this process's namespace does not have is bound in the world; loopback
    // stays here.
    let there = world::listener(SocketAddr::new(world::addr(6), 0)).unwrap();
    TcpStream::connect_timeout(&there.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
    let here = world::listener("127.0.0.1:0".parse().unwrap()).unwrap();
    TcpStream::connect(here.local_addr().unwrap()).unwrap();
}

#[test]
fn a_child_in_the_world_reaches_the_world_but_not_the_hosts_loopback() {
    if !privileged("world command") {
        return;
    }
    // The same probe the enclosure tests use: a peer in the world answers; the host's loopback
    // is not the world's (nothing listens on the world's own `lo`).
    let host_local = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = harness_tests::Peer::start(world::addr(7));
    for (target, reachable) in [
        (peer.addr.to_string(), true),
        (host_local.local_addr().unwrap().to_string(), false),
    ] {
        let out = world::command(Command::new(probe_bin()).args(["tcp", &target]))
            .output()
            .unwrap();
        let result: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(result["ok"], reachable, "{target}: {result}");
        if reachable {
            // From inside the world the peer is a local address.
            assert_eq!(result["reply"], format!("hello from {}", peer.addr));
        } else {
            assert_eq!(result["errno"], libc::ECONNREFUSED, "{result}");
        }
    }
    let inside = world::command(Command::new("ip").args(["-o", "-4", "addr", "show"]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inside.stdout);
    assert!(text.contains(&format!("{}/24", world::addr(9))), "{text}");
    assert!(
        !text.contains(&format!("{}/24", world::host_addr())),
        "{text}"
    );
}

#[test]
fn worlds_of_dead_processes_are_removed() {
    if !privileged("stale worlds") {
        return;
    }
    let _ = world::name();
    // A pid no process has: its world is stale.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dead = (2..pid_max)
        .rev()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let stale = format!("{}{dead}", world::NETNS_PREFIX);
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    let removed = world::remove_stale();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!removed.iter().any(|n| n == world::name()), "{removed:?}");
    assert!(!std::path::Path::new("/run/netns").join(&stale).exists());
    assert!(std::path::Path::new("/run/netns")
        .join(world::name())
        .exists());
}
