//! Compiling CIDR rules into the kernel's fixed-size rule array.
//!
//! The kernel holds addresses as four host-order words of an IPv6 address, IPv4 mapped to
//! `::ffff:a.b.c.d` (see `harness_common`), so one prefix comparison serves both families: an
//! IPv4 `/n` becomes a mapped `/(96+n)`, which matches IPv4 sockets and IPv6 sockets talking to
//! mapped IPv4 peers alike.

use std::net::IpAddr;

use harness_common::{mapped_v4, KernelRule, MAX_RULES};
use ipnet::IpNet;

use super::{Action, Rule, Target};

/// What the daemon writes into the kernel: the `RULES` array (in this order) and the
/// `default_action` of `EnclosureConfig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelProgram {
    /// One entry per (CIDR rule, port); port 0 for a rule without ports.
    pub rules: Vec<KernelRule>,
    /// [`harness_common::ACTION_ALLOW`] or [`harness_common::ACTION_DENY`].
    pub default_action: u32,
}

/// An address as the kernel holds it: four host-order words, IPv4 mapped into IPv6, so that
/// userspace can build map keys that compare equal to what the eBPF side reads from sockets.
pub fn ip_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => mapped_v4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            [
                (bits >> 96) as u32,
                (bits >> 64) as u32,
                (bits >> 32) as u32,
                bits as u32,
            ]
        }
    }
}

/// A network as the kernel holds it: network words and a prefix over 128 bits.
fn net_words(net: &IpNet) -> ([u32; 4], u32) {
    match net {
        IpNet::V4(v4) => (
            ip_words(IpAddr::V4(v4.network())),
            96 + u32::from(v4.prefix_len()),
        ),
        IpNet::V6(v6) => (
            ip_words(IpAddr::V6(v6.network())),
            u32::from(v6.prefix_len()),
        ),
    }
}

/// Compile CIDR rules (host rules are the daemon's and the `LEARNED` map's business) in file
/// order. Fails with the number of entries needed when the kernel's array cannot hold them.
pub(super) fn compile(rules: &[Rule], default: Action) -> Result<KernelProgram, usize> {
    let mut compiled = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let Target::Cidr(net) = &rule.target else {
            continue;
        };
        let (addr, prefix) = net_words(net);
        let ports: Vec<u32> = if rule.ports.is_empty() {
            vec![0]
        } else {
            rule.ports.iter().map(|&p| u32::from(p)).collect()
        };
        for port in ports {
            compiled.push(KernelRule {
                addr,
                prefix,
                port,
                action: rule.action.kernel_value(),
                rule_index: index as u32,
            });
        }
    }
    if compiled.len() > MAX_RULES as usize {
        return Err(compiled.len());
    }
    Ok(KernelProgram {
        rules: compiled,
        default_action: default.kernel_value(),
    })
}
