//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to resolve struct
//! member offsets (walking anonymous unions/structs) and enum names.
//!
//! Format: `include/uapi/linux/btf.h` (header, type section, string section).

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xEB9F;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Deepest nesting of anonymous members / modifiers followed (guards against malformed BTF).
const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF data is truncated or malformed: {0}")]
    Malformed(String),
    #[error("BTF has no struct or union named `{0}`")]
    NoSuchType(String),
    #[error("BTF struct `{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("BTF member `{path}` is a bitfield; its byte offset cannot be used")]
    Bitfield { path: String },
    #[error("BTF has no enum named `{0}`")]
    NoSuchEnum(String),
}

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
enum Type {
    /// Struct or union with its size and members.
    Composite {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    /// A type that just refers to another (typedef, const, volatile, restrict, type tag).
    Alias {
        target: u32,
    },
    Enum {
        name: String,
        values: Vec<(String, i64)>,
    },
    /// Something with a byte size and nothing more to resolve here (int, pointer, float, enum as member).
    Sized {
        size: u32,
    },
    Other,
}

/// Where a resolved member sits, and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u32,
    pub size: u32,
}

/// Parsed BTF types, indexed by type id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

impl Btf {
    pub fn from_sys_fs() -> std::io::Result<Vec<u8>> {
        std::fs::read("/sys/kernel/btf/vmlinux")
    }

    /// Parses raw BTF (little- or big-endian as the magic says).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let reader = Reader::new(data)?;
        let hdr_len = reader.u32(4)? as usize;
        let type_off = reader.u32(8)? as usize;
        let type_len = reader.u32(12)? as usize;
        let str_off = reader.u32(16)? as usize;
        let str_len = reader.u32(20)? as usize;
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        let strings = data
            .get(strings_start..strings_start + str_len)
            .ok_or_else(|| malformed("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };

        let mut types = vec![Type::Other];
        let mut pos = types_start;
        let end = types_start + type_len;
        while pos < end {
            let name_off = reader.u32(pos)?;
            let info = reader.u32(pos + 4)?;
            let size_or_type = reader.u32(pos + 8)?;
            pos += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    pos += 4;
                    Type::Sized { size: size_or_type }
                }
                KIND_PTR => Type::Sized { size: 8 },
                KIND_ARRAY => {
                    pos += 12;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let offset = reader.u32(pos + 8)?;
                        let (bit_offset, bitfield_size) =
                            if kind_flag { (offset & 0x00ff_ffff, offset >> 24) } else { (offset, 0) };
                        members.push(Member {
                            name: name(reader.u32(pos)?),
                            type_id: reader.u32(pos + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                        pos += 12;
                    }
                    Type::Composite { name: name(name_off), size: size_or_type, members }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        values.push((name(reader.u32(pos)?), i64::from(reader.u32(pos + 4)? as i32)));
                        pos += 8;
                    }
                    Type::Enum { name: name(name_off), values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let lo = u64::from(reader.u32(pos + 4)?);
                        let hi = u64::from(reader.u32(pos + 8)?);
                        values.push((name(reader.u32(pos)?), ((hi << 32) | lo) as i64));
                        pos += 12;
                    }
                    Type::Enum { name: name(name_off), values }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias { target: size_or_type }
                }
                KIND_FUNC_PROTO => {
                    pos += 8 * vlen;
                    Type::Other
                }
                KIND_VAR | KIND_DECL_TAG => {
                    pos += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    pos += 12 * vlen;
                    Type::Other
                }
                KIND_FLOAT => Type::Sized { size: size_or_type },
                KIND_FWD | KIND_FUNC => Type::Other,
                other => return Err(malformed(&format!("unknown BTF kind {other} at byte {pos}"))),
            };
            types.push(ty);
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in types.iter().enumerate() {
            let name = match ty {
                Type::Composite { name, .. } | Type::Enum { name, .. } => name,
                _ => continue,
            };
            if !name.is_empty() {
                by_name.entry(name.clone()).or_default().push(id as u32);
            }
        }
        Ok(Self { types, by_name })
    }

    /// Byte offset and size of `path` (dot-separated, e.g. `"ns.inum"`) inside struct `ty`,
    /// looking through anonymous unions and structs the way C does.
    pub fn member(&self, ty: &str, path: &str) -> Result<MemberInfo, BtfError> {
        let mut type_id = self
            .by_name
            .get(ty)
            .and_then(|ids| ids.iter().copied().find(|&id| matches!(self.types[id as usize], Type::Composite { .. })))
            .ok_or_else(|| BtfError::NoSuchType(ty.to_string()))?;
        let mut offset_bits = 0u32;
        for part in path.split('.') {
            let (bits, member_type, bitfield) = self
                .find_member(type_id, part, 0)
                .ok_or_else(|| BtfError::NoSuchMember { ty: ty.to_string(), member: path.to_string() })?;
            if bitfield != 0 || bits % 8 != 0 {
                return Err(BtfError::Bitfield { path: format!("{ty}.{path}") });
            }
            offset_bits += bits;
            type_id = self.strip(member_type);
        }
        Ok(MemberInfo { offset: offset_bits / 8, size: self.size_of(type_id) })
    }

    /// Name -> value of every enumerator of the enum named `name`.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .find_map(|&id| match &self.types[id as usize] {
                Type::Enum { values, .. } => Some(values.clone()),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoSuchEnum(name.to_string()))
    }

    /// Finds `name` among the members of composite `type_id`, descending into anonymous members.
    /// Returns (bit offset from the start of `type_id`, member type, bitfield size).
    fn find_member(&self, type_id: u32, name: &str, depth: usize) -> Option<(u32, u32, u32)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let Type::Composite { members, .. } = self.types.get(type_id as usize)? else { return None };
        for member in members {
            if member.name == name {
                return Some((member.bit_offset, member.type_id, member.bitfield_size));
            }
        }
        members.iter().filter(|m| m.name.is_empty()).find_map(|anon| {
            let inner = self.strip(anon.type_id);
            self.find_member(inner, name, depth + 1).map(|(bits, ty, bf)| (anon.bit_offset + bits, ty, bf))
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut type_id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.types.get(type_id as usize) {
                Some(Type::Alias { target }) => type_id = *target,
                _ => break,
            }
        }
        type_id
    }

    fn size_of(&self, type_id: u32) -> u32 {
        match self.types.get(type_id as usize) {
            Some(Type::Composite { size, .. }) | Some(Type::Sized { size }) => *size,
            // Enums used as members are 4 bytes in the kernel's ABI.
            Some(Type::Enum { .. }) => 4,
            _ => 0,
        }
    }
}

fn malformed(what: &str) -> BtfError {
    BtfError::Malformed(what.to_string())
}

struct Reader<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data.get(..2).ok_or_else(|| malformed("shorter than the BTF header"))?;
        let big_endian = if u16::from_le_bytes([magic[0], magic[1]]) == BTF_MAGIC {
            false
        } else if u16::from_be_bytes([magic[0], magic[1]]) == BTF_MAGIC {
            true
        } else {
            return Err(malformed("bad magic (not BTF)"));
        };
        if data.len() < 24 {
            return Err(malformed("shorter than the BTF header"));
        }
        Ok(Self { data, big_endian })
    }

    fn u32(&self, pos: usize) -> Result<u32, BtfError> {
        let bytes: [u8; 4] = self
            .data
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed(&format!("read past the end at byte {pos}")))?;
        Ok(if self.big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: int, struct inner { u16 a; u16 b; }, struct outer { int x;
    /// union { struct inner; } (anonymous); struct inner named; }, enum e { E_A = 1, E_B = 12 }.
    fn sample() -> Vec<u8> {
        let mut strings = b"\0int\0inner\0a\0b\0outer\0x\0named\0e\0E_A\0E_B\0u16\0".to_vec();
        let off = |s: &str, strings: &[u8]| -> u32 {
            let needle = format!("{s}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).map(|p| p as u32).unwrap_or(0)
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int (4 bytes)
        push(&[off("int", &strings), KIND_INT << 24, 4, 32]);
        // 2: u16 int
        push(&[off("u16", &strings), KIND_INT << 24, 2, 16]);
        // 3: struct inner { u16 a @0; u16 b @16 }
        push(&[off("inner", &strings), KIND_STRUCT << 24 | 2, 4]);
        push(&[off("a", &strings), 2, 0]);
        push(&[off("b", &strings), 2, 16]);
        // 4: anonymous union { struct inner } (member name empty)
        push(&[0, KIND_UNION << 24 | 1, 4]);
        push(&[0, 3, 0]);
        // 5: struct outer { int x @0; anon union @32; struct inner named @64 }
        push(&[off("outer", &strings), KIND_STRUCT << 24 | 3, 12]);
        push(&[off("x", &strings), 1, 0]);
        push(&[0, 4, 32]);
        push(&[off("named", &strings), 3, 64]);
        // 6: enum e { E_A = 1, E_B = 12 }
        push(&[off("e", &strings), KIND_ENUM << 24 | 2, 4]);
        push(&[off("E_A", &strings), 1]);
        push(&[off("E_B", &strings), 12]);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.append(&mut strings);
        out
    }

    #[test]
    fn resolves_direct_anonymous_and_nested_members() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member("outer", "x").expect("x"), MemberInfo { offset: 0, size: 4 });
        // `b` is reached through the anonymous union at byte 4, then 2 bytes into `inner`.
        assert_eq!(btf.member("outer", "b").expect("b"), MemberInfo { offset: 6, size: 2 });
        assert_eq!(btf.member("outer", "named.b").expect("named.b"), MemberInfo { offset: 10, size: 2 });
    }

    #[test]
    fn reports_missing_types_and_members_by_name() {
        let btf = Btf::parse(&sample()).expect("parse");
        let err = btf.member("outer", "nope").expect_err("missing member");
        assert_eq!(err.to_string(), "BTF struct `outer` has no member `nope`");
        assert!(matches!(btf.member("sk_buff", "head"), Err(BtfError::NoSuchType(_))));
    }

    #[test]
    fn reads_enum_values() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.enum_values("e").expect("enum"), vec![("E_A".into(), 1), ("E_B".into(), 12)]);
    }

    #[test]
    fn rejects_garbage_and_truncation_without_panicking() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(b"not btf at all, really not").is_err());
        let blob = sample();
        for len in 0..blob.len() {
            let _ = Btf::parse(&blob[..len]);
        }
    }
}
