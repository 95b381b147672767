//! Names of the chains, sets and maps the planner makes: readable where they can be, short
//! and collision-free always (long or unusual names become a readable prefix plus a hash).

use crate::nft::ir::{IrError, Name};

/// Longest chain or set name the planner makes. The kernel takes 255 bytes, but names this
/// long already make `nft list` hard to read.
pub const MAX_NAME_LEN: usize = 64;

/// Hex digits of hash appended to a shortened name (48 bits: collisions among the few
/// thousand names of one ruleset are vanishingly unlikely, and are detected anyway).
const HASH_DIGITS: usize = 12;

pub const FORWARD: &str = "forward";
pub const FORWARD_TO: &str = "forward-to";
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";
pub const POSTROUTING: &str = "postrouting";
pub const WL_TO_HOST: &str = "wl-to-host";
pub const FROM_WL_MAP: &str = "from-wl";
pub const TO_WL_MAP: &str = "to-wl";
pub const FROM_WL_PASS_MAP: &str = "from-wl-pass";
pub const TO_WL_PASS_MAP: &str = "to-wl-pass";
pub const NAT_POOLS_V4: &str = "nat-pools-v4";
pub const NAT_POOLS_V6: &str = "nat-pools-v6";
pub const ALL_POOLS_V4: &str = "all-pools-v4";
pub const ALL_POOLS_V6: &str = "all-pools-v6";

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`, so
/// set names (and golden files) do not change under a toolchain upgrade.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A fast `HashMap` hasher (the multiply-rotate scheme of rustc's FxHash, eight bytes at a
/// time): the planner's maps are keyed by label maps and names from the model, where SipHash
/// dominated planning time. Hash flooding is no concern: the keys come from the datastore
/// the agent already trusts, and a bad spread costs time, never correctness.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// See [`FastHash`].
#[derive(Debug, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// The first [`HASH_DIGITS`] hex digits of the hash of `text`.
pub fn short_hash(text: &str) -> String {
    let mut hex = format!("{:016x}", fnv1a(text.as_bytes()));
    hex.truncate(HASH_DIGITS);
    hex
}

/// `<prefix><body>` when that is a valid name of at most [`MAX_NAME_LEN`] bytes;
/// otherwise `<prefix><readable part of body>-<hash of body>`, which stays unique.
pub fn limited(prefix: &str, body: &str) -> Result<Name, IrError> {
    let clean = body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if clean && prefix.len() + body.len() <= MAX_NAME_LEN {
        return Name::new(format!("{prefix}{body}"));
    }
    let keep = MAX_NAME_LEN - prefix.len() - 1 - HASH_DIGITS;
    let readable: String = body
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(keep)
        .collect();
    Name::new(format!("{prefix}{readable}-{}", short_hash(body)))
}

/// A fixed, known-good name.
pub fn fixed(name: &str) -> Result<Name, IrError> {
    Name::new(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_names_stay_readable() {
        assert_eq!(limited("pri-", "web").map(|n| n.to_string()), Ok("pri-web".to_string()));
        assert_eq!(
            limited("pi-", "team-a.allow-dns").map(|n| n.to_string()),
            Ok("pi-team-a.allow-dns".to_string())
        );
    }

    #[test]
    fn long_or_odd_names_get_a_hash_and_stay_distinct() {
        let long_a = "a".repeat(100) + "x";
        let long_b = "a".repeat(100) + "y";
        let a = limited("pro-", &long_a).expect("name");
        let b = limited("pro-", &long_b).expect("name");
        assert!(a.as_str().len() <= MAX_NAME_LEN && b.as_str().len() <= MAX_NAME_LEN);
        assert!(a.as_str().starts_with("pro-aaaa"));
        assert_ne!(a, b);
        let odd = limited("pi-", "ns/name").expect("name");
        assert!(odd.as_str().starts_with("pi-ns_name-"), "{odd}");
    }

    #[test]
    fn hash_is_stable() {
        // Golden files depend on this value never changing.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(short_hash("has(web)"), short_hash("has(web)"));
        assert_eq!(short_hash("a").len(), 12);
    }
}
