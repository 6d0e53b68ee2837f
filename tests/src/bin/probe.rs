//! `probe`: a small static client the enclosure tests run inside `harness run`. Each mode tries
//! one thing a process might do and prints one JSON line saying what the kernel answered.
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tcp", addr] => tcp(addr),
        ["udp", addr] => udp_sendto(addr),
        ["udp-connect", addr] => udp_connect(addr),
        ["dns", name, server] => dns(name, server),
        ["dns-connected", name, server] => dns_connected(name, server),
        ["escape", procs] => escape(procs),
        ["icmp"] => socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        ["raw"] => socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
        ["wait-then-tcp", file, addr] => {
            while !std::path::Path::new(file).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            tcp(addr)
        }
        _ => Err(("usage".into(), 0)),
    };
    match result {
        Ok(fields) => println!("{{\"ok\":true,{fields}}}"),
        Err((error, errno)) => println!(
            "{{\"ok\":false,\"errno\":{errno},\"error\":{}}}",
            json_str(&error)
        ),
    }
}

type Outcome = Result<String, (String, i32)>;

fn err(e: std::io::Error) -> (String, i32) {
    (e.to_string(), e.raw_os_error().unwrap_or(0))
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Connects, reports getpeername and getsockname, says hello and returns the peer's reply.
fn tcp(addr: &str) -> Outcome {
    let addr: SocketAddr = addr.parse().map_err(|e| (format!("{e}"), 0))?;
    let mut stream = TcpStream::connect(addr).map_err(err)?;
    let peer = stream.peer_addr().map_err(err)?;
    let local = stream.local_addr().map_err(err)?;
    stream.write_all(b"hello\n").map_err(err)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(err)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(err)?;
    Ok(format!(
        "\"peer\":{},\"local\":{},\"reply\":{}",
        json_str(&peer.to_string()),
        json_str(&local.to_string()),
        json_str(&reply)
    ))
}

fn bind_for(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
}

fn udp_sendto(addr: &str) -> Outcome {
    let addr: SocketAddr = addr.parse().map_err(|e| (format!("{e}"), 0))?;
    let socket = UdpSocket::bind(bind_for(&addr)).map_err(err)?;
    socket.send_to(b"quic?", addr).map_err(err)?;
    Ok("\"sent\":true".into())
}

fn udp_connect(addr: &str) -> Outcome {
    let addr: SocketAddr = addr.parse().map_err(|e| (format!("{e}"), 0))?;
    let socket = UdpSocket::bind(bind_for(&addr)).map_err(err)?;
    socket.connect(addr).map_err(err)?;
    socket.send(b"quic?").map_err(err)?;
    Ok("\"sent\":true".into())
}

/// A DNS A query for `name`, by hand: header, one question.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Summarises a DNS answer: rcode and the A records' addresses.
fn summarise(reply: &[u8], from: Option<SocketAddr>) -> Outcome {
    if reply.len() < 12 {
        return Err(("short DNS reply".into(), 0));
    }
    let rcode = reply[3] & 0x0f;
    let ancount = u16::from_be_bytes([reply[6], reply[7]]);
    // Skip the question, then read A records (name is a 2-byte pointer in our test server).
    let mut i = 12;
    while i < reply.len() && reply[i] != 0 {
        i += 1 + reply[i] as usize;
    }
    i += 5;
    let mut addrs = Vec::new();
    for _ in 0..ancount {
        if i + 12 > reply.len() {
            break;
        }
        let rtype = u16::from_be_bytes([reply[i + 2], reply[i + 3]]);
        let rdlen = u16::from_be_bytes([reply[i + 10], reply[i + 11]]) as usize;
        if rtype == 1 && rdlen == 4 && i + 16 <= reply.len() {
            addrs.push(format!(
                "\"{}.{}.{}.{}\"",
                reply[i + 12],
                reply[i + 13],
                reply[i + 14],
                reply[i + 15]
            ));
        }
        i += 12 + rdlen;
    }
    Ok(format!(
        "\"rcode\":{rcode},\"addrs\":[{}],\"from\":{}",
        addrs.join(","),
        json_str(&from.map(|f| f.to_string()).unwrap_or_default())
    ))
}

fn dns(name: &str, server: &str) -> Outcome {
    let server: SocketAddr = server.parse().map_err(|e| (format!("{e}"), 0))?;
    let socket = UdpSocket::bind(bind_for(&server)).map_err(err)?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    socket.send_to(&query(name), server).map_err(err)?;
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).map_err(err)?;
    summarise(&buf[..n], Some(from))
}

fn dns_connected(name: &str, server: &str) -> Outcome {
    let server: SocketAddr = server.parse().map_err(|e| (format!("{e}"), 0))?;
    let socket = UdpSocket::bind(bind_for(&server)).map_err(err)?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    socket.connect(server).map_err(err)?;
    socket.send(&query(name)).map_err(err)?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).map_err(err)?;
    summarise(&buf[..n], socket.peer_addr().ok())
}

/// Tries to leave the session cgroup by writing our pid into another cgroup's procs file.
fn escape(procs: &str) -> Outcome {
    std::fs::OpenOptions::new()
        .write(true)
        .open(procs)
        .and_then(|mut f| f.write_all(std::process::id().to_string().as_bytes()))
        .map_err(err)?;
    Ok("\"escaped\":true".into())
}

/// Tries to open a socket of a kind the enclosure forbids (ICMP "ping" sockets, raw sockets).
fn socket(domain: i32, kind: i32, protocol: i32) -> Outcome {
    // SAFETY: a plain socket(2) call; the descriptor is closed at once.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2) and is owned here.
    unsafe { libc::close(fd) };
    Ok("\"opened\":true".into())
}
