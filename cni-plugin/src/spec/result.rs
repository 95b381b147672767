//! CNI results: one internal shape, rendered in and parsed from every spec version's shape.
//!
//! 0.1.0/0.2.0 use `ip4`/`ip6` objects (one address per family; what Mesos reads); 0.3.0
//! onwards use `interfaces`/`ips`/`routes`, with `ips[].version` only before 1.0.0 and
//! interface `mtu` only from 1.1.0.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniVersion;

/// A result independent of spec version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An interface the plugin made; `sandbox` is the netns path for container-side ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address; `interface` indexes [`CniResult::interfaces`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings; every field optional. Rendered as `{}` when empty, as the Go types do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A result (or prevResult) that does not have any version's shape.
#[derive(Debug, thiserror::Error)]
#[error("not a CNI result: {0}")]
pub struct ResultParseError(String);

// ---- wire shapes --------------------------------------------------------------------------

#[derive(Serialize)]
struct LegacyOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip4: Option<LegacyIp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip6: Option<LegacyIp>,
    dns: &'a Dns,
}

#[derive(Serialize, Deserialize)]
struct LegacyIp {
    ip: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct CurrentOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<CurrentIp>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Dns,
}

#[derive(Serialize, Deserialize)]
struct CurrentIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

/// Any version's result, read leniently: unknown fields (1.1.0 route attributes,
/// `socketPath`, ...) are dropped.
#[derive(Deserialize)]
struct AnyIn {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<CurrentIp>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Option<Dns>,
}

impl CniResult {
    /// The result JSON for `version`.
    pub fn render(&self, version: CniVersion) -> Value {
        let rendered = if version.has_legacy_result() {
            serde_json::to_value(LegacyOut {
                cni_version: version.as_str(),
                ip4: self.legacy_ip(IpAddr::is_ipv4),
                ip6: self.legacy_ip(IpAddr::is_ipv6),
                dns: &self.dns,
            })
        } else {
            let with_mtu = version >= CniVersion::V1_1_0;
            serde_json::to_value(CurrentOut {
                cni_version: version.as_str(),
                interfaces: self
                    .interfaces
                    .iter()
                    .map(|i| Interface { mtu: i.mtu.filter(|_| with_mtu), ..i.clone() })
                    .collect(),
                ips: self.ips.iter().map(|ip| current_ip(ip, version)).collect(),
                routes: &self.routes,
                dns: &self.dns,
            })
        };
        // Serialising plain structs of strings and numbers into a Value cannot fail.
        rendered.unwrap_or(Value::Null)
    }

    /// The first address of a family with the routes of that family: all a 0.2.0 result
    /// can carry.
    fn legacy_ip(&self, family: impl Fn(&IpAddr) -> bool) -> Option<LegacyIp> {
        let ip = self.ips.iter().find(|ip| family(&ip.address.addr()))?;
        Some(LegacyIp {
            ip: ip.address,
            gateway: ip.gateway,
            routes: self.routes.iter().filter(|r| family(&r.dst.addr())).cloned().collect(),
        })
    }

    /// Reads a result of any supported version (a prevResult or a delegate's output).
    pub fn parse(value: Value) -> Result<CniResult, ResultParseError> {
        let any: AnyIn =
            serde_path_to_error::deserialize(value).map_err(|e| ResultParseError(e.to_string()))?;
        let mut result = CniResult { dns: any.dns.unwrap_or_default(), ..CniResult::default() };
        if any.ip4.is_some() || any.ip6.is_some() {
            for legacy in [any.ip4, any.ip6].into_iter().flatten() {
                result.ips.push(IpConfig {
                    address: legacy.ip,
                    gateway: legacy.gateway,
                    interface: None,
                });
                result.routes.extend(legacy.routes);
            }
            return Ok(result);
        }
        for (n, ip) in any.ips.iter().enumerate() {
            if let Some(i) = ip.interface.filter(|i| *i >= any.interfaces.len()) {
                return Err(ResultParseError(format!(
                    "ips[{n}].interface is {i} but there are {} interfaces",
                    any.interfaces.len()
                )));
            }
        }
        result.interfaces = any.interfaces;
        result.ips = any
            .ips
            .into_iter()
            .map(|ip| IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            })
            .collect();
        result.routes = any.routes;
        Ok(result)
    }

    /// Appends `other` (this plugin's own part) after a prevResult, re-indexing its interfaces.
    pub fn merge(mut self, other: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(
            other
                .ips
                .into_iter()
                .map(|ip| IpConfig { interface: ip.interface.map(|i| i + offset), ..ip }),
        );
        self.routes.extend(other.routes);
        if self.dns == Dns::default() {
            self.dns = other.dns;
        }
        self
    }
}

fn current_ip(ip: &IpConfig, version: CniVersion) -> CurrentIp {
    let family = if ip.address.addr().is_ipv4() { "4" } else { "6" };
    CurrentIp {
        version: (version < CniVersion::V1_0_0).then(|| family.to_owned()),
        interface: ip.interface,
        address: ip.address,
        gateway: ip.gateway,
    }
}

/// The VERSION answer.
#[derive(Debug, Serialize)]
pub struct VersionReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

impl VersionReply {
    pub fn new(version: CniVersion) -> VersionReply {
        VersionReply {
            cni_version: version.as_str(),
            supported_versions: CniVersion::ALL.iter().map(|v| v.as_str()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    /// A dual-stack result as tabby's ADD produces it.
    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cali0123456789a".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:00:00:05".into()),
                    mtu: Some(1500),
                    sandbox: Some("/var/run/netns/x".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.5/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("169.254.1.1".parse().unwrap()),
                },
                Route {
                    dst: "::/0".parse().unwrap(),
                    gw: Some("fe80::ecee:eeff:feee:eeee".parse().unwrap()),
                },
            ],
            dns: Dns { nameservers: vec!["10.0.0.1".into()], ..Dns::default() },
        }
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Field lists from the spec text of each version (SPEC.md at tags spec-v0.1.0 ..
    /// spec-v1.1.0): every rendered key must be one the version defines.
    fn check_current_shape(v: &Value, version: CniVersion) {
        assert!(keys(v).is_subset(&set(&["cniVersion", "interfaces", "ips", "routes", "dns"])));
        assert_eq!(v["cniVersion"], version.as_str());
        let iface_fields: &[&str] = if version >= CniVersion::V1_1_0 {
            &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"]
        } else {
            &["name", "mac", "sandbox"]
        };
        for iface in v["interfaces"].as_array().unwrap() {
            assert!(keys(iface).is_subset(&set(iface_fields)), "{version}: {iface}");
            assert!(iface.get("name").is_some());
        }
        let ip_fields: &[&str] = if version >= CniVersion::V1_0_0 {
            &["address", "gateway", "interface"]
        } else {
            &["version", "address", "gateway", "interface"]
        };
        for ip in v["ips"].as_array().unwrap() {
            assert!(keys(ip).is_subset(&set(ip_fields)), "{version}: {ip}");
            assert!(ip.get("address").is_some());
            if version < CniVersion::V1_0_0 {
                let want = if ip["address"].as_str().unwrap().contains(':') { "6" } else { "4" };
                assert_eq!(ip["version"], want, "{version}: ips[].version is required");
            }
        }
        for route in v["routes"].as_array().unwrap() {
            assert!(keys(route).is_subset(&set(&["dst", "gw"])));
        }
        assert!(keys(&v["dns"]).is_subset(&set(&["nameservers", "domain", "search", "options"])));
    }

    fn check_legacy_shape(v: &Value, version: CniVersion) {
        assert_eq!(keys(v), set(&["cniVersion", "ip4", "ip6", "dns"]), "{version}");
        assert_eq!(v["cniVersion"], version.as_str());
        for fam in ["ip4", "ip6"] {
            assert!(keys(&v[fam]).is_subset(&set(&["ip", "gateway", "routes"])), "{fam}");
            for route in v[fam]["routes"].as_array().unwrap() {
                assert!(keys(route).is_subset(&set(&["dst", "gw"])));
            }
        }
        assert_eq!(v["ip4"]["ip"], "10.0.0.5/32");
        assert_eq!(v["ip4"]["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
        assert_eq!(v["ip6"]["ip"], "fd00::5/128");
        assert_eq!(v["dns"], json!({"nameservers": ["10.0.0.1"]}));
    }

    #[test]
    fn shape_0_1_0() {
        check_legacy_shape(&sample().render(CniVersion::V0_1_0), CniVersion::V0_1_0);
    }

    #[test]
    fn shape_0_2_0() {
        check_legacy_shape(&sample().render(CniVersion::V0_2_0), CniVersion::V0_2_0);
    }

    #[test]
    fn shape_0_3_0() {
        check_current_shape(&sample().render(CniVersion::V0_3_0), CniVersion::V0_3_0);
    }

    #[test]
    fn shape_0_3_1() {
        check_current_shape(&sample().render(CniVersion::V0_3_1), CniVersion::V0_3_1);
    }

    #[test]
    fn shape_0_4_0() {
        check_current_shape(&sample().render(CniVersion::V0_4_0), CniVersion::V0_4_0);
    }

    #[test]
    fn shape_1_0_0() {
        let v = sample().render(CniVersion::V1_0_0);
        check_current_shape(&v, CniVersion::V1_0_0);
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][0].get("mtu").is_none(), "mtu is new in 1.1.0");
    }

    #[test]
    fn shape_1_1_0() {
        let v = sample().render(CniVersion::V1_1_0);
        check_current_shape(&v, CniVersion::V1_1_0);
        assert_eq!(v["interfaces"][1]["mtu"], 1500);
        assert_eq!(v["ips"][0], json!({"interface": 1, "address": "10.0.0.5/32"}));
    }

    #[test]
    fn empty_dns_renders_as_empty_object() {
        let v = CniResult::default().render(CniVersion::V0_2_0);
        assert_eq!(v, json!({"cniVersion": "0.2.0", "dns": {}}));
    }

    #[test]
    fn every_version_round_trips_what_it_can_carry() {
        for version in CniVersion::ALL {
            let parsed = CniResult::parse(sample().render(version)).unwrap();
            assert_eq!(parsed.ips.len(), 2, "{version}");
            assert_eq!(parsed.routes, sample().routes, "{version}");
            assert_eq!(parsed.dns, sample().dns, "{version}");
            if !version.has_legacy_result() {
                assert_eq!(parsed.ips, sample().ips, "{version}");
                assert_eq!(parsed.interfaces.len(), 2);
            }
        }
    }

    #[test]
    fn parses_host_local_outputs() {
        let v020 =
            json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.2/24","gateway":"10.1.0.1"},"dns":{}});
        let r = CniResult::parse(v020).unwrap();
        assert_eq!(r.ips[0].address, "10.1.0.2/24".parse::<IpNet>().unwrap());
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        let v100 = json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"}],
            "routes":[{"dst":"0.0.0.0/0","mtu":1400}],"dns":{}});
        let r = CniResult::parse(v100).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(CniResult::parse(json!({"ips": [{"address": "nope"}]})).is_err());
        assert!(
            CniResult::parse(json!({"ips": [{"address": "10.0.0.1/32", "interface": 3}]})).is_err()
        );
        assert!(CniResult::parse(json!([1, 2])).is_err());
    }

    #[test]
    fn merge_reindexes_interfaces() {
        let prev = CniResult {
            interfaces: vec![Interface { name: "lo".into(), ..Interface::default() }],
            ..CniResult::default()
        };
        let merged = prev.merge(sample());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(2));
    }

    #[test]
    fn version_reply_lists_every_version() {
        let v = serde_json::to_value(VersionReply::new(CniVersion::V1_0_0)).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "supportedVersions":
                ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
