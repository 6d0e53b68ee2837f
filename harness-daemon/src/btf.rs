//! Field offsets of the running kernel's structures, read from its BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! The unix-socket programs compare two sockets' network namespaces, which means reading a
//! field of `struct sock` whose offset differs between kernels (6.1 and 6.18 lay it out
//! differently). C eBPF would use CO-RE relocations; the Rust toolchain does not emit them,
//! so the daemon reads the offsets here and hands them to the programs in their config.
//!
//! Only what that needs is parsed: the type section, struct and union members (with
//! anonymous members searched through, as C field access does).
use std::path::{Path, PathBuf};

/// Where the running kernel publishes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Why an offset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The BTF file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not BTF as this parser knows it.
    #[error("{path}: not BTF: {reason}")]
    Malformed {
        /// The BTF file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The struct or field is not there.
    #[error("{path}: no field {field} in struct {structure}")]
    Missing {
        /// The BTF file.
        path: PathBuf,
        /// The struct looked in.
        structure: String,
        /// The field looked for.
        field: String,
    },
}

/// One struct or union: its name and members (name, type id, bit offset).
#[derive(Debug, Clone)]
struct Composite {
    name: String,
    members: Vec<(String, u32, u32)>,
}

/// The structs and unions of a BTF blob, by type id.
#[derive(Debug)]
pub struct Types {
    path: PathBuf,
    composites: std::collections::HashMap<u32, Composite>,
    /// Typedefs and modifiers (const, volatile, restrict, type tags): what they stand for.
    aliases: std::collections::HashMap<u32, u32>,
}

impl Types {
    /// Reads the running kernel's BTF.
    pub fn vmlinux() -> Result<Types, BtfError> {
        Types::read(Path::new(VMLINUX))
    }

    /// Reads and parses a BTF file.
    pub fn read(path: &Path) -> Result<Types, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_owned(),
            source,
        })?;
        Types::parse(path, &bytes)
    }

    /// Parses BTF `bytes` (native endianness), naming `path` in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Types, BtfError> {
        let bad = |reason: &str| BtfError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(bad("bad magic"));
        }
        let header = |i: usize| u32_at(8 + 4 * i).ok_or_else(|| bad("short header"));
        let hdr_len = u32_at(4).ok_or_else(|| bad("short header"))? as usize;
        let (type_off, type_len, str_off, str_len) =
            (header(0)?, header(1)?, header(2)?, header(3)?);
        let types_start = hdr_len + type_off as usize;
        let types_end = types_start + type_len as usize;
        let strings_start = hdr_len + str_off as usize;
        let strings = bytes
            .get(strings_start..strings_start + str_len as usize)
            .ok_or_else(|| bad("string section out of bounds"))?;
        let name = |offset: u32| -> String {
            let tail = strings.get(offset as usize..).unwrap_or_default();
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };
        let mut composites = std::collections::HashMap::new();
        let mut aliases = std::collections::HashMap::new();
        let mut at = types_start;
        let mut id = 1u32;
        while at < types_end {
            let (name_off, info, size_or_type) = (
                u32_at(at).ok_or_else(|| bad("truncated type"))?,
                u32_at(at + 4).ok_or_else(|| bad("truncated type"))?,
                u32_at(at + 8).ok_or_else(|| bad("truncated type"))?,
            );
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,          // int, var, decl_tag
                3 => 12,                   // array
                4 | 5 => 12 * vlen,        // struct, union
                6 | 13 => 8 * vlen,        // enum, func_proto
                15 | 19 => 12 * vlen,      // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, modifiers, func, float, type_tag
                _ => return Err(bad(&format!("unknown kind {kind} (type {id})"))),
            };
            if matches!(kind, 8..=11 | 18) {
                aliases.insert(id, size_or_type);
            }
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let base = at + 12 * m;
                    let (m_name, m_type, m_off) = (
                        u32_at(base).ok_or_else(|| bad("truncated member"))?,
                        u32_at(base + 4).ok_or_else(|| bad("truncated member"))?,
                        u32_at(base + 8).ok_or_else(|| bad("truncated member"))?,
                    );
                    // With kind_flag, the top 8 bits are a bitfield's size.
                    let bits = if kind_flag {
                        m_off & 0x00ff_ffff
                    } else {
                        m_off
                    };
                    members.push((name(m_name), m_type, bits));
                }
                composites.insert(
                    id,
                    Composite {
                        name: name(name_off),
                        members,
                    },
                );
            }
            at += extra;
            id += 1;
        }
        Ok(Types {
            path: path.to_owned(),
            composites,
            aliases,
        })
    }

    /// The byte offset of `field` (a dotted path such as `__sk_common.skc_net.net`) in the
    /// struct named `structure`, anonymous members searched through.
    pub fn offset_of(&self, structure: &str, field: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing {
            path: self.path.clone(),
            structure: structure.to_owned(),
            field: field.to_owned(),
        };
        let (mut id, _) = self
            .composites
            .iter()
            .find(|(_, c)| c.name == structure)
            .map(|(id, c)| (*id, c))
            .ok_or_else(missing)?;
        let mut bits = 0u32;
        for part in field.split('.') {
            let (member_bits, member_type) = self.find_member(id, part).ok_or_else(missing)?;
            bits += member_bits;
            id = member_type;
        }
        if !bits.is_multiple_of(8) {
            return Err(missing());
        }
        Ok(bits / 8)
    }

    /// A member's bit offset within composite `id` (typedefs and modifiers followed) and its
    /// type, searching anonymous members.
    fn find_member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let mut id = id;
        for _ in 0..16 {
            match self.aliases.get(&id) {
                Some(target) => id = *target,
                None => break,
            }
        }
        let composite = self.composites.get(&id)?;
        for (member, ty, bits) in &composite.members {
            if member == name {
                return Some((*bits, *ty));
            }
            if member.is_empty() {
                if let Some((inner, ty)) = self.find_member(*ty, name) {
                    return Some((bits + inner, ty));
                }
            }
        }
        None
    }
}

/// The offsets the unix-socket programs need, from the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOffsets {
    /// `struct sock`: `__sk_common.skc_net.net`.
    pub sock_net: u32,
    /// `struct socket`: `sk`.
    pub socket_sk: u32,
}

impl SocketOffsets {
    /// Reads them from `types`.
    pub fn from_types(types: &Types) -> Result<SocketOffsets, BtfError> {
        Ok(SocketOffsets {
            sock_net: types.offset_of("sock", "__sk_common.skc_net.net")?,
            socket_sk: types.offset_of("socket", "sk")?,
        })
    }
}

/// The offsets the process programs need, from the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessOffsets {
    /// `struct task_struct`: `pid`.
    pub task_pid: u32,
    /// `struct task_struct`: `tgid`.
    pub task_tgid: u32,
    /// `struct task_struct`: `real_parent`.
    pub task_real_parent: u32,
    /// `struct task_struct`: `mm`.
    pub task_mm: u32,
    /// `struct task_struct`: `exit_code`.
    pub task_exit_code: u32,
    /// `struct mm_struct`: `arg_start`.
    pub mm_arg_start: u32,
    /// `struct mm_struct`: `arg_end`.
    pub mm_arg_end: u32,
    /// `struct linux_binprm`: `filename`.
    pub bprm_filename: u32,
}

impl ProcessOffsets {
    /// Reads them from `types`.
    pub fn from_types(types: &Types) -> Result<ProcessOffsets, BtfError> {
        Ok(ProcessOffsets {
            task_pid: types.offset_of("task_struct", "pid")?,
            task_tgid: types.offset_of("task_struct", "tgid")?,
            task_real_parent: types.offset_of("task_struct", "real_parent")?,
            task_mm: types.offset_of("task_struct", "mm")?,
            task_exit_code: types.offset_of("task_struct", "exit_code")?,
            mm_arg_start: types.offset_of("mm_struct", "arg_start")?,
            mm_arg_end: types.offset_of("mm_struct", "arg_end")?,
            bprm_filename: types.offset_of("linux_binprm", "filename")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (every machine this project runs on has it) yields offsets
    /// that make sense: `sk` lies inside `struct socket`, and the namespace pointer inside the
    /// first cache lines of `struct sock`.
    #[test]
    fn socket_offsets_from_the_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("\n*** SKIPPED socket_offsets_from_the_running_kernel: no {VMLINUX} ***\n");
            return;
        }
        let types = Types::vmlinux().unwrap();
        let offsets = SocketOffsets::from_types(&types).unwrap();
        assert!(offsets.sock_net.is_multiple_of(8), "{offsets:?}");
        assert!(offsets.sock_net < 256, "{offsets:?}");
        assert!(
            offsets.socket_sk > 0 && offsets.socket_sk < 128,
            "{offsets:?}"
        );
        assert!(types.offset_of("sock", "no_such_field").is_err());
    }

    /// The task fields lie where a `struct task_struct` could hold them: `tgid` right after
    /// `pid`, and the `mm_struct` argument bounds one after the other.
    #[test]
    fn process_offsets_from_the_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("\n*** SKIPPED process_offsets_from_the_running_kernel: no {VMLINUX} ***\n");
            return;
        }
        let offsets = ProcessOffsets::from_types(&Types::vmlinux().unwrap()).unwrap();
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4, "{offsets:?}");
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8, "{offsets:?}");
        assert!(offsets.task_mm.is_multiple_of(8), "{offsets:?}");
        assert!(offsets.task_real_parent.is_multiple_of(8), "{offsets:?}");
    }

    #[test]
    fn garbage_is_not_btf() {
        let err = Types::parse(Path::new("x"), b"not btf at all").unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
    }
}
