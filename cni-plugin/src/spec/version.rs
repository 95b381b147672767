//! CNI spec versions: which ones tabby speaks and how the one to answer in is chosen.

use std::fmt;

use super::Error;

/// A CNI spec version tabby can read and answer in.
///
/// Ordered oldest first, so `a < b` means "a is older than b".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every version tabby supports, oldest first (the VERSION answer).
    pub const ALL: [CniVersion; 7] = [
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version: used for answers when the request's version is unknown.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// What a config without `cniVersion` means. Calico (and so every Mesos setup written
    /// for it) treats a missing version as 0.2.0, the `ip4`/`ip6` result shape Mesos parses.
    pub const DEFAULT: CniVersion = CniVersion::V0_2_0;

    /// The version string as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses an exact version string; anything else is "incompatible version" (code 1).
    pub fn parse(s: &str) -> Result<CniVersion, Error> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::IncompatibleVersion { requested: s.to_owned() })
    }

    /// Whether results use the legacy `ip4`/`ip6` shape (0.1.0 and 0.2.0).
    pub fn has_legacy_result(self) -> bool {
        self <= CniVersion::V0_2_0
    }

    /// Whether the CHECK verb exists in this version (0.4.0 and later).
    pub fn supports_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// Whether GC and STATUS exist in this version (1.1.0 and later).
    pub fn supports_gc_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Chooses the version to answer in from a config's `cniVersion` and `cniVersions`.
    ///
    /// An explicit `cniVersion` wins, because the runtime decodes our answer by the version it
    /// wrote there. Without it, the newest supported entry of `cniVersions` is used; without
    /// either, [`CniVersion::DEFAULT`].
    pub fn negotiate(
        cni_version: Option<&str>,
        cni_versions: Option<&[String]>,
    ) -> Result<CniVersion, Error> {
        if let Some(v) = cni_version {
            return CniVersion::parse(v);
        }
        match cni_versions {
            Some(list) => list
                .iter()
                .filter_map(|v| CniVersion::parse(v).ok())
                .max()
                .ok_or_else(|| Error::IncompatibleVersion { requested: list.join(", ") }),
            None => Ok(CniVersion::DEFAULT),
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_round_trips() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()).unwrap(), v);
        }
    }

    #[test]
    fn unknown_versions_are_code_1() {
        for bad in ["0.5.0", "1.2.0", "2.0.0", "1.0", "", "v1.0.0"] {
            let err = CniVersion::parse(bad).unwrap_err();
            assert_eq!(err.code(), 1, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn missing_version_means_0_2_0() {
        assert_eq!(CniVersion::negotiate(None, None).unwrap(), CniVersion::V0_2_0);
    }

    #[test]
    fn cni_versions_picks_newest_supported() {
        let list = vec!["0.4.0".to_owned(), "9.9.9".to_owned(), "1.0.0".to_owned()];
        assert_eq!(CniVersion::negotiate(None, Some(&list)).unwrap(), CniVersion::V1_0_0);
        let none = vec!["9.9.9".to_owned()];
        assert_eq!(CniVersion::negotiate(None, Some(&none)).unwrap_err().code(), 1);
    }

    #[test]
    fn explicit_version_wins_over_list() {
        let list = vec!["1.1.0".to_owned()];
        assert_eq!(CniVersion::negotiate(Some("0.3.1"), Some(&list)).unwrap(), CniVersion::V0_3_1);
    }

    #[test]
    fn verbs_by_version() {
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_gc_status());
        assert!(CniVersion::V1_1_0.supports_gc_status());
        assert!(CniVersion::V0_2_0.has_legacy_result());
        assert!(!CniVersion::V0_3_0.has_legacy_result());
    }
}
