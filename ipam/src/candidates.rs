//! The order in which a host probes a pool's blocks when it needs a new one.
//!
//! Every host walks the pool in its own pseudo-random order, seeded by its name, so hosts that
//! start together do not all fight over the pool's first block (Calico libcalico PR #102), and
//! one host always probes in the same order. The order is a bijection on block indexes computed
//! one index at a time: a /8 pool of /26 blocks (262,144 blocks) or a v6 /64 pool of /122 blocks
//! (2^56 blocks) never has its candidate list materialised.

use ipnet::IpNet;

use crate::block::add_to_ip;

/// FNV-1a (64 bit) of the host name: Calico seeds its block order with an FNV hash too.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn wide(state: &mut u64) -> u128 {
    (u128::from(splitmix64(state)) << 64) | u128::from(splitmix64(state))
}

/// A permutation of `0..2^bits` evaluated lazily. Each step (multiply by an odd number, add,
/// xor with a right shift of itself) is a bijection modulo `2^bits`, so their composition is.
#[derive(Debug, Clone)]
pub struct Permutation {
    bits: u32,
    mask: u128,
    mul: [u128; 2],
    add: [u128; 2],
    shift: u32,
}

impl Permutation {
    pub fn new(bits: u32, seed: u64) -> Self {
        let bits = bits.min(128);
        let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        let mut state = seed;
        let mul = [wide(&mut state) | 1, wide(&mut state) | 1];
        let add = [wide(&mut state), wide(&mut state)];
        Permutation { bits, mask, mul, add, shift: bits.div_ceil(2).max(1) }
    }

    /// The image of `i` (only the low `bits` bits of `i` are used).
    pub fn apply(&self, i: u128) -> u128 {
        if self.bits == 0 {
            return 0;
        }
        let mut x = i & self.mask;
        for round in 0..2 {
            x = x.wrapping_mul(self.mul[round]).wrapping_add(self.add[round]) & self.mask;
            x ^= x >> self.shift;
        }
        x
    }
}

/// The blocks of a pool in one host's probe order. Finite (every block once), lazy.
#[derive(Debug, Clone)]
pub struct Candidates {
    pool: IpNet,
    block_host_bits: u32,
    perm: Permutation,
    next: u128,
    /// Number of blocks, or `None` when it is 2^128 (a v6 /0 pool of /128 blocks).
    count: Option<u128>,
}

impl Candidates {
    /// Candidate blocks of `block_prefix` inside `pool`, ordered for `host`. A block prefix
    /// shorter than the pool's yields nothing.
    pub fn new(pool: IpNet, block_prefix: u8, host: &str) -> Self {
        let pool = pool.trunc();
        let max = u32::from(pool.max_prefix_len());
        let block_prefix = u32::from(block_prefix).min(max);
        let (bits, empty) = match block_prefix.checked_sub(u32::from(pool.prefix_len())) {
            Some(bits) => (bits, false),
            None => (0, true),
        };
        let count = if empty {
            Some(0)
        } else if bits >= 128 {
            None
        } else {
            Some(1u128 << bits)
        };
        Candidates {
            pool,
            block_host_bits: max - block_prefix,
            perm: Permutation::new(bits, fnv1a64(host.as_bytes())),
            next: 0,
            count,
        }
    }

    /// Number of blocks in the pool (saturating at `u128::MAX`).
    pub fn block_count(&self) -> u128 {
        self.count.unwrap_or(u128::MAX)
    }

    fn block_at(&self, index: u128) -> Option<IpNet> {
        let offset = index.checked_shl(self.block_host_bits).unwrap_or(0);
        let prefix = (u32::from(self.pool.max_prefix_len()) - self.block_host_bits) as u8;
        IpNet::new(add_to_ip(self.pool.network(), offset), prefix).ok()
    }
}

impl Iterator for Candidates {
    type Item = IpNet;

    fn next(&mut self) -> Option<IpNet> {
        if self.count.is_some_and(|c| self.next >= c) {
            return None;
        }
        let index = self.perm.apply(self.next);
        self.next = self.next.wrapping_add(1);
        if self.count.is_none() && self.next == 0 {
            // Wrapped around a full 2^128 walk: stop rather than repeat.
            self.count = Some(0);
        }
        self.block_at(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn permutation_is_a_bijection_for_small_sizes() {
        for bits in 0..=12 {
            for seed in [0, 1, 42, u64::MAX] {
                let p = Permutation::new(bits, seed);
                let n = 1u128 << bits;
                let seen: HashSet<u128> = (0..n).map(|i| p.apply(i)).collect();
                assert_eq!(seen.len() as u128, n, "bits={bits} seed={seed}");
                assert!(seen.iter().all(|&x| x < n));
            }
        }
    }

    #[test]
    fn visits_every_block_of_a_small_pool_once() {
        let pool: IpNet = "10.0.0.0/22".parse().unwrap();
        let blocks: Vec<IpNet> = Candidates::new(pool, 26, "node1").collect();
        assert_eq!(blocks.len(), 16);
        let set: HashSet<IpNet> = blocks.iter().copied().collect();
        assert_eq!(set.len(), 16);
        for b in &blocks {
            assert_eq!(b.prefix_len(), 26);
            assert!(pool.contains(b));
            assert_eq!(b.trunc(), *b);
        }
    }

    #[test]
    fn order_is_per_host_and_deterministic() {
        let pool: IpNet = "10.0.0.0/8".parse().unwrap();
        let a1: Vec<IpNet> = Candidates::new(pool, 26, "host-a").take(8).collect();
        let a2: Vec<IpNet> = Candidates::new(pool, 26, "host-a").take(8).collect();
        let b: Vec<IpNet> = Candidates::new(pool, 26, "host-b").take(8).collect();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1[0], b[0], "hosts should start at different blocks");
    }

    #[test]
    fn huge_pools_are_lazy() {
        let pool: IpNet = "10.0.0.0/8".parse().unwrap();
        let c = Candidates::new(pool, 26, "n");
        assert_eq!(c.block_count(), 262_144);
        let v6: IpNet = "fd00::/48".parse().unwrap();
        let mut c6 = Candidates::new(v6, 122, "n");
        assert_eq!(c6.block_count(), 1u128 << 74);
        let first = c6.next().unwrap();
        assert!(v6.contains(&first));
        assert_eq!(first.prefix_len(), 122);
    }

    #[test]
    fn degenerate_pools() {
        let one: Vec<IpNet> = Candidates::new("10.0.0.0/26".parse().unwrap(), 26, "n").collect();
        assert_eq!(one, vec!["10.0.0.0/26".parse::<IpNet>().unwrap()]);
        assert_eq!(Candidates::new("10.0.0.0/26".parse().unwrap(), 24, "n").count(), 0);
    }
}
