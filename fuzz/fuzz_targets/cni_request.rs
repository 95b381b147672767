//! Fuzzes the CNI plugin's front door: `CNI_*` environment + stdin into a validated
//! `Request`. Never panics; errors carry a parse-time code and render as CNI error JSON; a
//! `prevResult` that parses renders and re-parses to itself.
//!
//! Input: `KEY=VALUE` lines (values may be any bytes), an empty line, then stdin. The seed
//! corpus holds real invocations in that shape.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use cni_plugin::spec::{sanitize_mesos_label, CniResult, CniVersion, NetConf, RawEnv, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (env_part, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let vars = env_part.split(|&b| b == b'\n').filter_map(|line| {
        let eq = line.iter().position(|&b| b == b'=')?;
        Some((OsString::from_vec(line[..eq].to_vec()), OsString::from_vec(line[eq + 1..].to_vec())))
    });
    let env = RawEnv::from_vars(vars);

    match Request::parse(&env, stdin) {
        Err(e) => {
            // Parsing looks at nothing outside its input: every refusal is final and has one
            // of the parse-time codes (version, env, decode, config).
            assert!(matches!(e.code(), 1 | 4 | 6 | 7), "code {} for {e}", e.code());
            assert!(!e.is_retryable(), "parse error marked retryable: {e}");
            let reply = e.to_reply(CniVersion::LATEST);
            serde_json::to_string(&reply).expect("error reply serialises");
        }
        Ok(Request::Version(_)) => {}
        Ok(Request::Add(inv) | Request::Check(inv)) => check_conf(&inv.conf),
        Ok(Request::Del(inv)) => check_conf(&inv.conf),
        Ok(Request::Gc(m) | Request::Status(m)) => check_conf(&m.conf),
    }
    // The config parser alone, whatever the environment said.
    if let Ok(conf) = NetConf::parse(stdin) {
        check_conf(&conf);
    }
});

fn check_conf(conf: &NetConf) {
    if let Some(prev) = &conf.prev_result {
        for version in CniVersion::ALL {
            let _ = prev.render(version);
        }
        // The newest shape carries everything the internal result holds.
        let rendered = prev.render(CniVersion::LATEST);
        let back = CniResult::parse(rendered.clone()).expect("a rendered result parses");
        assert_eq!(&back, prev, "prevResult does not round-trip through {rendered}");
    }
    if let Some(mesos) = &conf.mesos {
        for (k, v) in &mesos.raw_labels {
            for s in [k, v] {
                let once = sanitize_mesos_label(s);
                assert_eq!(sanitize_mesos_label(&once), once, "sanitising {s:?} is not idempotent");
            }
        }
    }
}
