//! Interval-set arithmetic: the kernel stores an interval set as closed ranges of big-endian
//! keys, each sent as a start element and an "interval end" element one past its last key.
//! Encoder, renderer and differ all work on the same canonical ranges so they agree.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A closed range of keys of a given width, held as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub start: u128,
    pub end: u128,
}

/// The largest key of a `bits`-wide key type.
pub fn max_key(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Sorts the ranges and merges overlapping ones; also merges touching ones when asked
/// (`nft` does that for anonymous sets, but keeps `10.0.0.0/24, 10.0.1.0/24` apart in
/// named sets).
pub fn canonicalize(mut ranges: Vec<Interval>, merge_adjacent: bool) -> Vec<Interval> {
    ranges.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = out.last_mut() {
            let touches = merge_adjacent && last.end.checked_add(1) == Some(r.start);
            if r.start <= last.end || touches {
                last.end = last.end.max(r.end);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// The prefix length of the range when it is exactly one CIDR block of a `bits`-wide key.
pub fn prefix_len(r: Interval, bits: u32) -> Option<u32> {
    let span = r.end.checked_sub(r.start)?;
    // A block spans 2^k keys (span = 2^k - 1, all low bits set) and starts aligned to it.
    let is_block = span & span.wrapping_add(1) == 0 && r.start & span == 0;
    is_block.then(|| bits - span.count_ones())
}

/// Big-endian bytes of the low `bits` bits of `key` (bits is 8, 16, 32 or 128).
pub fn key_bytes(key: u128, bits: u32) -> Vec<u8> {
    let all = key.to_be_bytes();
    all[16 - (bits as usize / 8)..].to_vec()
}

/// Text of one range for `nft` syntax, given how to print a single key.
pub fn render(r: Interval, bits: u32, key: impl Fn(u128) -> String) -> String {
    match prefix_len(r, bits) {
        Some(len) if len == bits => key(r.start),
        // Ports have no prefix notation; addresses do.
        Some(len) if bits == 32 || bits == 128 => format!("{}/{len}", key(r.start)),
        _ if r.start == r.end => key(r.start),
        _ => format!("{}-{}", key(r.start), key(r.end)),
    }
}

pub fn v4_key(k: u128) -> String {
    Ipv4Addr::from(k as u32).to_string()
}

pub fn v6_key(k: u128) -> String {
    Ipv6Addr::from(k).to_string()
}

pub fn port_key(k: u128) -> String {
    k.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(start: u128, end: u128) -> Interval {
        Interval { start, end }
    }

    #[test]
    fn overlaps_merge_and_touching_ranges_merge_only_when_asked() {
        let input = vec![iv(10, 20), iv(0, 3), iv(15, 30), iv(31, 40), iv(50, 50)];
        assert_eq!(
            canonicalize(input.clone(), false),
            vec![iv(0, 3), iv(10, 30), iv(31, 40), iv(50, 50)]
        );
        assert_eq!(canonicalize(input, true), vec![iv(0, 3), iv(10, 40), iv(50, 50)]);
        // Nothing wraps past the top key.
        assert_eq!(
            canonicalize(vec![iv(u128::MAX, u128::MAX), iv(0, 0)], true),
            vec![iv(0, 0), iv(u128::MAX, u128::MAX)]
        );
    }

    #[test]
    fn prefixes_are_recognised() {
        assert_eq!(prefix_len(iv(0x0a00_0000, 0x0aff_ffff), 32), Some(8));
        assert_eq!(prefix_len(iv(5, 5), 32), Some(32));
        assert_eq!(prefix_len(iv(0, u128::from(u32::MAX)), 32), Some(0));
        assert_eq!(prefix_len(iv(0, u128::MAX), 128), Some(0));
        assert_eq!(prefix_len(iv(1, 2), 32), None);
        assert_eq!(prefix_len(iv(0x0a00_0000, 0x0a01_00ff), 32), None);
    }

    #[test]
    fn renders_like_nft() {
        assert_eq!(render(iv(0x0a00_0000, 0x0aff_ffff), 32, v4_key), "10.0.0.0/8");
        assert_eq!(render(iv(0x0a00_0001, 0x0a00_0001), 32, v4_key), "10.0.0.1");
        assert_eq!(render(iv(0x0a00_0001, 0x0a00_0002), 32, v4_key), "10.0.0.1-10.0.0.2");
        assert_eq!(render(iv(80, 80), 16, port_key), "80");
        assert_eq!(render(iv(1000, 2000), 16, port_key), "1000-2000");
        // A port range that happens to be aligned is still a range.
        assert_eq!(render(iv(0, 1023), 16, port_key), "0-1023");
    }

    #[test]
    fn key_bytes_are_big_endian_and_sized() {
        assert_eq!(key_bytes(0x0a00_0001, 32), vec![10, 0, 0, 1]);
        assert_eq!(key_bytes(443, 16), vec![1, 0xbb]);
        assert_eq!(key_bytes(6, 8), vec![6]);
        assert_eq!(key_bytes(1, 128).len(), 16);
        assert_eq!(max_key(16), 65535);
    }
}
