//! Short, collision-free names for things tests create in shared kernel namespaces.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counter shared by every name this process hands out.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Width of the base-36 process id in a name: 36^5 > 4_194_304, Linux's largest pid.
const PID_WIDTH: usize = 5;

/// Returns `prefix` followed by a suffix unique to this process and call, at most `max_len`
/// characters long.
///
/// Interface names are limited to 15 characters, so the suffix is compact: the process id in
/// exactly five base-36 digits, then a per-process counter in base 36. Fixing the width of the
/// pid part keeps the encoding injective, so two names from different processes (or two calls
/// in one process) never collide.
///
/// Panics if `prefix` leaves no room for the suffix within `max_len`; that is a bug in the
/// test, not a condition to tolerate.
pub fn unique_name(prefix: &str, max_len: usize) -> String {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{prefix}{:0>width$}{}",
        base36(u64::from(std::process::id())),
        base36(count),
        width = PID_WIDTH
    );
    assert!(
        name.len() <= max_len,
        "unique_name: prefix {prefix:?} is too long for a {max_len}-character name \
         (needs {} characters: {name:?})",
        name.len()
    );
    name
}

/// Lower-case base-36 digits of `n`, most significant first.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_fit() {
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            let name = unique_name("tt", 15);
            assert!(name.len() <= 15, "{name} is too long");
            assert!(name.starts_with("tt"));
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
            assert!(seen.insert(name.clone()), "duplicate name {name}");
        }
    }

    #[test]
    fn names_are_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..500).map(|_| unique_name("v", 15)).collect::<Vec<_>>())
            })
            .collect();
        let mut seen = HashSet::new();
        for handle in handles {
            for name in handle.join().unwrap() {
                assert!(seen.insert(name.clone()), "duplicate name {name}");
            }
        }
        assert_eq!(seen.len(), 2000);
    }

    #[test]
    fn pid_part_has_fixed_width() {
        let name = unique_name("", 15);
        let pid = &name[..PID_WIDTH];
        assert_eq!(u64::from_str_radix(pid, 36).unwrap(), u64::from(std::process::id()));
    }

    #[test]
    fn base36_encodes() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(4_194_304).len(), PID_WIDTH);
    }

    #[test]
    #[should_panic(expected = "too long")]
    fn refuses_a_prefix_that_leaves_no_room() {
        let _ = unique_name("a-very-long-prefix", 15);
    }
}
