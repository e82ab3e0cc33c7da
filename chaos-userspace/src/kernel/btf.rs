//! Kernel struct member offsets, looked up in the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Members inside anonymous structs and unions (common in `task_struct`) are found by walking
//! into them and adding their offsets, the way libbpf's CO-RE field relocation does
//! (tools/lib/bpf/relo_core.c).

use std::path::Path;

use btf_rs::{Btf, Type};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Open {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {strukt}.{member} is a bitfield, which the programs cannot read")]
    Bitfield { strukt: String, member: String },
    #[error("kernel BTF is malformed")]
    Malformed(#[source] btf_rs::Error),
}

/// Kernel type information, loaded once per run.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|source| BtfError::Open {
                path: path.display().to_string(),
                source,
            })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        Btf::from_bytes(bytes)
            .map(|btf| Self { btf })
            .map_err(|source| BtfError::Open {
                path: "<bytes>".into(),
                source,
            })
    }

    /// Byte offset of `member` in `struct strukt`, searching anonymous members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|_| BtfError::NoStruct(strukt.into()))?;
        let Some(Type::Struct(def)) = types.into_iter().find(|t| matches!(t, Type::Struct(_)))
        else {
            return Err(BtfError::NoStruct(strukt.into()));
        };
        let bits =
            self.find_member(&def, member, 0, strukt)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: member.into(),
                })?;
        Ok(bits / 8)
    }

    /// Bit offset of `member` inside `def` (which starts at `base` bits), or None.
    fn find_member(
        &self,
        def: &btf_rs::Struct,
        member: &str,
        base: u32,
        strukt: &str,
    ) -> Result<Option<u32>, BtfError> {
        for m in &def.members {
            let name = self.btf.resolve_name(m).map_err(BtfError::Malformed)?;
            let offset = base + m.bit_offset();
            if name == member {
                if m.bitfield_size().is_some_and(|size| size != 0) || !offset.is_multiple_of(8) {
                    return Err(BtfError::Bitfield {
                        strukt: strukt.into(),
                        member: member.into(),
                    });
                }
                return Ok(Some(offset));
            }
            if name.is_empty() {
                // An anonymous struct or union: its members belong to the outer struct.
                if let Some(inner) = self.aggregate_of(m)?
                    && let Some(found) = self.find_member(&inner, member, offset, strukt)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The struct or union a member's type resolves to, through typedefs and qualifiers.
    fn aggregate_of(&self, m: &btf_rs::Member) -> Result<Option<btf_rs::Struct>, BtfError> {
        let mut ty = self
            .btf
            .resolve_chained_type(m)
            .map_err(BtfError::Malformed)?;
        loop {
            ty = match ty {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(t) => self
                    .btf
                    .resolve_chained_type(&t)
                    .map_err(BtfError::Malformed)?,
                Type::Const(t) | Type::Volatile(t) => self
                    .btf
                    .resolve_chained_type(&t)
                    .map_err(BtfError::Malformed)?,
                _ => return Ok(None),
            };
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A hand-encoded BTF blob (include/uapi/linux/btf.h) standing in for vmlinux in tests.

    const INT: u32 = 1;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;

    #[derive(Default)]
    pub struct BtfWriter {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl BtfWriter {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            offset
        }

        fn push(&mut self, words: &[u32]) -> u32 {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let name = self.string(name);
            self.push(&[name, INT << 24, bytes, bytes * 8])
        }

        /// `members`: (name, type id, bit offset, bitfield size or 0).
        pub fn aggregate(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let name = self.string(name);
            let kind = if union { UNION } else { STRUCT };
            let kind_flag = u32::from(members.iter().any(|m| m.3 != 0));
            let mut words = vec![
                name,
                (kind_flag << 31) | (kind << 24) | members.len() as u32,
                size,
            ];
            for &(member, ty, bits, bitfield) in members {
                let member = self.string(member);
                let offset = if kind_flag == 1 {
                    (bitfield << 24) | bits
                } else {
                    bits
                };
                words.extend_from_slice(&[member, ty, offset]);
            }
            self.push(&words)
        }

        pub fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            for word in [
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixture::BtfWriter, *};

    /// struct task_struct { u32 state; union { u32 flags_a; struct { u32 pad; u32 exit_code; }; };
    ///                      u32 pid; u32 tgid; u32 bits:3; }
    fn task_struct_fixture() -> KernelBtf {
        let mut w = BtfWriter::new();
        let u32_id = w.int("unsigned int", 4);
        let inner = w.aggregate(
            false,
            "",
            8,
            &[("pad", u32_id, 0, 0), ("exit_code", u32_id, 32, 0)],
        );
        let anon = w.aggregate(true, "", 8, &[("flags_a", u32_id, 0, 0), ("", inner, 0, 0)]);
        w.aggregate(
            false,
            "task_struct",
            24,
            &[
                ("state", u32_id, 0, 0),
                ("", anon, 32, 0),
                ("pid", u32_id, 96, 0),
                ("tgid", u32_id, 128, 0),
                ("bits", u32_id, 160, 3),
            ],
        );
        KernelBtf::from_bytes(&w.finish()).unwrap()
    }

    #[test]
    fn finds_direct_and_nested_anonymous_members() {
        let btf = task_struct_fixture();
        assert_eq!(btf.member_offset("task_struct", "pid").unwrap(), 12);
        assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), 16);
        // struct at 32 bits -> union -> anonymous struct at +32 bits.
        assert_eq!(btf.member_offset("task_struct", "exit_code").unwrap(), 8);
        assert_eq!(btf.member_offset("task_struct", "flags_a").unwrap(), 4);
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = task_struct_fixture();
        assert_eq!(
            btf.member_offset("task_struct", "real_parent")
                .unwrap_err()
                .to_string(),
            "kernel BTF: struct task_struct has no member real_parent"
        );
        assert_eq!(
            btf.member_offset("mm_struct", "pgd")
                .unwrap_err()
                .to_string(),
            "kernel BTF has no struct mm_struct"
        );
        assert!(matches!(
            btf.member_offset("task_struct", "bits"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    #[test]
    #[ignore = "reads this machine's /sys/kernel/btf/vmlinux; run by `cargo xtask test`"]
    fn running_kernel_has_the_members_the_programs_read() {
        let btf = KernelBtf::load(Path::new(VMLINUX)).unwrap();
        for member in [
            "pid",
            "tgid",
            "real_parent",
            "group_leader",
            "exit_code",
            "start_time",
        ] {
            btf.member_offset("task_struct", member).unwrap();
        }
    }
}
