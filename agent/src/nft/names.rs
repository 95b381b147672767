//! Validated leaf values of the nftables IR: object names, interface names, comments, log
//! prefixes and MAC addresses. Each is checked once, when built, so encoder and renderer can
//! trust it.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use super::ir::IrError;

/// Longest table, chain or set name we accept. The kernel allows 255 bytes; chain names that
/// long only make listings unreadable, and a bound keeps every netlink message small.
pub const MAX_NAME_LEN: usize = 128;

/// Interface names are at most `IFNAMSIZ - 1` bytes.
pub const MAX_IFNAME_LEN: usize = 15;

/// Comments are stored as rule userdata; libnftnl caps them at 128 bytes with the NUL.
pub const MAX_COMMENT_LEN: usize = 127;

/// The kernel's log prefix buffer is 128 bytes with the NUL.
pub const MAX_LOG_PREFIX_LEN: usize = 127;

/// Single words that `nft` parses as identifiers. Any other word might be a keyword of the
/// `nft` grammar (`ip`, `accept`, …), which `nft -f` rejects as a chain or set name, so other
/// names must contain `-`, `_` or `.`, which no keyword does.
const PLAIN_WORDS: &[&str] =
    &["input", "forward", "output", "prerouting", "postrouting", "filter", "nat", "tabby"];

fn invalid(what: &'static str, value: &str, reason: &'static str) -> IrError {
    IrError::Invalid { what, value: value.to_string(), reason }
}

/// A table, chain, set or map name that both the kernel and `nft -f` accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Checks `name`: `[A-Za-z_][A-Za-z0-9_.-]*`, at most [`MAX_NAME_LEN`] bytes, and either
    /// containing `-`, `_` or `.` or one of a few plain words known not to be `nft` keywords.
    pub fn new(name: impl Into<String>) -> Result<Self, IrError> {
        let name = name.into();
        let what = "name";
        if name.is_empty() {
            return Err(invalid(what, &name, "is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(what, &name, "is longer than 128 bytes"));
        }
        let mut bytes = name.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok {
            return Err(invalid(what, &name, "must start with a letter or '_'"));
        }
        if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(invalid(what, &name, "may contain only letters, digits, '_', '-' and '.'"));
        }
        let punctuated = name.bytes().any(|b| matches!(b, b'_' | b'-' | b'.'));
        if !punctuated && !PLAIN_WORDS.contains(&name.as_str()) {
            return Err(invalid(
                what,
                &name,
                "must contain '-', '_' or '.' (a plain word may be an nft keyword)",
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = IrError;
    fn from_str(s: &str) -> Result<Self, IrError> {
        Self::new(s)
    }
}

/// Checks the characters of an interface name or prefix: printable ASCII without whitespace,
/// quotes, backslash, `/`, `:` or `*` (the kernel forbids `/`, `:` and whitespace; the others
/// would need escaping in `nft` syntax, and `*` means "prefix" there).
fn check_ifname_chars(what: &'static str, name: &str) -> Result<(), IrError> {
    if name.is_empty() {
        return Err(invalid(what, name, "is empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid(what, name, "is longer than 15 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'/' | b':' | b'*'))
    {
        return Err(invalid(
            what,
            name,
            "may contain only printable ASCII without quotes, '\\', '/', ':' or '*'",
        ));
    }
    Ok(())
}

/// A whole interface name, such as `cali1234abcd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    pub fn new(name: impl Into<String>) -> Result<Self, IrError> {
        let name = name.into();
        check_ifname_chars("interface name", &name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the kernel compares it: `IFNAMSIZ` bytes, zero padded.
    pub fn key_bytes(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..self.0.len()].copy_from_slice(self.0.as_bytes());
        key
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fixed start of interface names, such as `cali` (written `"cali*"` in nft syntax).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfPrefix(String);

impl IfPrefix {
    pub fn new(prefix: impl Into<String>) -> Result<Self, IrError> {
        let prefix = prefix.into();
        check_ifname_chars("interface prefix", &prefix)?;
        Ok(Self(prefix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks text that ends up inside double quotes in `nft` syntax.
fn check_quoted_text(what: &'static str, text: &str, max: usize) -> Result<(), IrError> {
    if text.len() > max {
        return Err(invalid(what, text, "is longer than 127 bytes"));
    }
    if !text.bytes().all(|b| (b.is_ascii_graphic() || b == b' ') && !matches!(b, b'"' | b'\\')) {
        return Err(invalid(
            what,
            text,
            "may contain only printable ASCII and spaces, without '\"' or '\\'",
        ));
    }
    Ok(())
}

/// A rule comment, stored as rule userdata and shown by `nft list`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comment(String);

impl Comment {
    pub fn new(text: impl Into<String>) -> Result<Self, IrError> {
        let text = text.into();
        check_quoted_text("comment", &text, MAX_COMMENT_LEN)?;
        if text.is_empty() {
            return Err(invalid("comment", &text, "is empty"));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The prefix of a `log` statement's kernel log lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPrefix(String);

impl LogPrefix {
    pub fn new(text: impl Into<String>) -> Result<Self, IrError> {
        let text = text.into();
        check_quoted_text("log prefix", &text, MAX_LOG_PREFIX_LEN)?;
        if text.is_empty() {
            return Err(invalid("log prefix", &text, "is empty"));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = IrError;

    /// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
    fn from_str(s: &str) -> Result<Self, IrError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .ok_or_else(|| invalid("MAC address", s, "needs six ':'-separated bytes"))?;
            if part.len() != 2 {
                return Err(invalid("MAC address", s, "each byte must be two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| invalid("MAC address", s, "each byte must be two hex digits"))?;
        }
        if parts.next().is_some() {
            return Err(invalid("MAC address", s, "needs six ':'-separated bytes"));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_str(&parts.join(":"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_nft_identifier_rules() {
        for ok in ["fw-cali12ab", "pri-web", "from_wl", "forward", "a.b", "_x", "tabby"] {
            assert!(Name::new(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in ["", "ip", "accept", "1abc", "-x", "a b", "a\"b", "caf\u{e9}-x"] {
            assert!(Name::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Name::new("a-".repeat(64)).is_ok());
        assert!(Name::new(format!("a-{}", "x".repeat(127))).is_err());
    }

    #[test]
    fn interface_names_are_bounded_and_plain() {
        assert!(IfName::new("cali1234567890a").is_ok());
        assert!(IfName::new("cali1234567890ab").is_err());
        for bad in ["", "a b", "a/b", "a:b", "a*", "a\"b"] {
            assert!(IfName::new(bad).is_err(), "{bad:?} should be rejected");
        }
        let key = IfName::new("eth0").map(|n| n.key_bytes()).ok();
        assert_eq!(key, Some(*b"eth0\0\0\0\0\0\0\0\0\0\0\0\0"));
    }

    #[test]
    fn quoted_texts_reject_quotes() {
        assert!(Comment::new("Unknown interface").is_ok());
        assert!(Comment::new("say \"hi\"").is_err());
        assert!(Comment::new("").is_err());
        assert!(LogPrefix::new("x".repeat(127)).is_ok());
        assert!(LogPrefix::new("x".repeat(128)).is_err());
    }

    #[test]
    fn mac_addresses_round_trip() {
        let mac: MacAddr = "AA:bb:0c:dd:ee:0F".parse().expect("valid MAC");
        assert_eq!(mac.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:0f");
        for bad in
            ["aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "a:bb:cc:dd:ee:ff", "zz:bb:cc:dd:ee:ff"]
        {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} should be rejected");
        }
    }
}
