//! `ipamctl` as an operator runs it: the real binary against a real etcd, one key prefix per
//! test. State is made with the library (allocations) or written raw (what a crashed or
//! foreign writer leaves), and every command's output and exit status are checked.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::net::IpAddr;

use common::{request, Env};
use datastore::keys::Kind;
use datastore::model::ipam::{AffinityState, BlockAffinity, IpamHandle};
use ipam::{AssignRequest, Attrs, Block};
use serde_json::Value;
use testkit::Etcd;

const OLD: &str = "2020-01-01T00:00:00Z";

/// One finished run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }
}

/// Runs `ipamctl args…` against the test's prefix, with no node name or netns of this machine
/// leaking in.
async fn ipamctl(env: &Env, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .args(args)
        .env("ETCD_ENDPOINTS", Etcd::shared().endpoint())
        .env("TABBY_ETCD_PREFIX", env.keys.prefix())
        .env("TABBY_NODENAME", "ipamctl-test-node")
        .env_remove("ETCD_CA_CERT_FILE")
        .env_remove("ETCD_CERT_FILE")
        .env_remove("ETCD_KEY_FILE")
        .env_remove("TABBY_LOG")
        .output()
        .await
        .expect("run ipamctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn attrs(node: &str, container: &str, ts: &str) -> Attrs {
    Attrs::from([
        ("node".to_string(), node.to_string()),
        ("containerID".to_string(), container.to_string()),
        ("timestamp".to_string(), ts.to_string()),
    ])
}

/// Allocates one address for `container` on `node` (handle `net.<container>.eth0`).
async fn allocate(env: &Env, node: &str, container: &str, ts: &str) -> IpAddr {
    let req = AssignRequest {
        attrs: attrs(node, container, ts),
        ..request(&format!("net.{container}.eth0"), 1, 0)
    };
    env.allocator(node).assign(&req).await.unwrap().v4[0].addr()
}

/// The workload endpoint the CNI plugin would have written for `container`.
async fn put_wep(env: &Env, node: &str, container: &str, addr: IpAddr) {
    let name = datastore::keys::workload_endpoint_name(node, "cni", container, "eth0").unwrap();
    let wep = serde_json::json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"node": node, "orchestrator": "cni", "workload": container, "endpoint": "eth0",
                 "containerID": container, "ipNetworks": [format!("{addr}/32")]}
    });
    let key = env.keys.resource(Kind::WorkloadEndpoint, Some("default"), &name);
    env.put_raw(&key, wep.to_string().as_bytes()).await;
}

async fn put_json<T: serde::Serialize>(env: &Env, key: &str, value: &T) {
    env.put_raw(key, &serde_json::to_vec(value).unwrap()).await;
}

/// Reads block `cidr`, lets `f` change it, and writes it back (no CAS: the test is
/// the only writer).
async fn edit_block(env: &Env, cidr: ipnet::IpNet, f: impl FnOnce(&mut Block)) {
    let key = env.keys.block(cidr);
    let kv = env.client.get(&key).await.unwrap().unwrap();
    let mut block = Block::from_record(serde_json::from_slice(&kv.value).unwrap()).unwrap();
    f(&mut block);
    put_json(env, &key, block.record()).await;
}

async fn block_of(env: &Env, ip: IpAddr) -> ipnet::IpNet {
    env.allocator("reader").get_assignment(ip).await.unwrap().unwrap().block
}

/// `check -o json` without the revision (which moves with every write to the shared etcd).
async fn report_json(env: &Env) -> (i32, Value) {
    let run = ipamctl(env, &["check", "-o", "json"]).await;
    let mut v = run.json();
    v.as_object_mut().unwrap().remove("revision");
    (run.code, v)
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} is not a list: {v:#}"))
        .iter()
        .map(|x| x[field].as_str().map_or_else(|| x[field].to_string(), str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_added_listed_disabled_and_removed() {
    let env = Env::new().await;
    let out = ipamctl(&env, &["pool", "add", "default", "10.70.0.0/16"]).await.ok();
    assert_eq!(out.stdout, "Created IP pool default (10.70.0.0/16, /26 blocks)\n");
    let args = [
        "pool",
        "add",
        "rack-a",
        "10.71.0.0/20",
        "--block-size",
        "28",
        "--ipip-mode",
        "CrossSubnet",
        "--nat-outgoing",
        "--node-selector",
        "rack == 'a'",
        "--disabled",
    ];
    ipamctl(&env, &args).await.ok();
    ipamctl(&env, &["pool", "add", "v6", "fd00:70::/64"]).await.ok();

    let ls = ipamctl(&env, &["pool", "ls"]).await.ok();
    assert_eq!(
        ls.stdout,
        "NAME      CIDR           BLOCK SIZE   IPIP          NAT     DISABLED   SELECTOR\n\
         default   10.70.0.0/16           26   Never         false   false      all()\n\
         rack-a    10.71.0.0/20           28   CrossSubnet   true    true       rack == 'a'\n\
         v6        fd00:70::/64          122   Never         false   false      all()\n"
    );
    let json = ipamctl(&env, &["pool", "ls", "-o", "json"]).await.ok().json();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["kind"], "IPPool");
    assert_eq!(items[1]["spec"]["ipipMode"], "CrossSubnet");
    assert_eq!(items[1]["spec"]["blockSize"], 28);
    assert_eq!(items[1]["spec"]["natOutgoing"], true);
    assert_eq!(items[1]["spec"]["disabled"], true);

    let out = ipamctl(&env, &["pool", "enable", "rack-a"]).await.ok();
    assert_eq!(out.stdout, "IP pool rack-a (10.71.0.0/20) enabled\n");
    ipamctl(&env, &["pool", "disable", "default"]).await.ok();
    let json = ipamctl(&env, &["pool", "ls", "-o", "json"]).await.ok().json();
    assert_eq!(json[0]["spec"]["disabled"], true);
    assert!(json[1]["spec"]["disabled"].is_null(), "enabled pools omit the field: {json:#}");

    // A pool with allocations is only removed with --force.
    ipamctl(&env, &["pool", "enable", "default"]).await.ok();
    let ip = allocate(&env, "n1", "c1", OLD).await;
    let refused = ipamctl(&env, &["pool", "rm", "default"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stderr.contains("still has 1 addresses allocated"), "{refused:#?}");
    assert!(refused.stderr.contains("--force"), "{refused:#?}");
    env.allocator("n1").release_by_handle("net.c1.eth0").await.unwrap();
    let out = ipamctl(&env, &["pool", "rm", "default"]).await.ok();
    assert_eq!(out.stdout, "Deleted IP pool default (1 empty blocks removed)\n");
    assert!(env.client.get(&env.keys.block(block_cidr(ip, 26))).await.unwrap().is_none());
    ipamctl(&env, &["pool", "rm", "v6"]).await.ok();
    let ls = ipamctl(&env, &["pool", "ls"]).await.ok();
    assert_eq!(ls.stdout.lines().count(), 2, "{}", ls.stdout);
    assert!(ls.stdout.contains("rack-a"));

    let missing = ipamctl(&env, &["pool", "rm", "default"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("IP pool default not found"), "{missing:#?}");
}

fn block_cidr(ip: IpAddr, prefix: u8) -> ipnet::IpNet {
    ipnet::IpNet::new(ip, prefix).unwrap().trunc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_argument() {
    let env = Env::new().await;
    ipamctl(&env, &["pool", "add", "p1", "10.80.0.0/16"]).await.ok();

    let cases: [(&[&str], &str); 8] = [
        (&["pool", "add", "p2", "10.80.128.0/17"], "overlaps pool p1 (10.80.0.0/16)"),
        (&["pool", "add", "p2", "10.0.0.0/8"], "overlaps pool p1"),
        (&["pool", "add", "p2", "10.81.0.0/33"], "invalid CIDR \"10.81.0.0/33\""),
        (&["pool", "add", "p2", "10.81.0.1/16"], "did you mean 10.81.0.0/16?"),
        (
            &["pool", "add", "p2", "10.81.0.0/16", "--block-size", "19"],
            "invalid --block-size \"19\"",
        ),
        (&["pool", "add", "p2", "10.81.0.0/16", "--block-size", "33"], "expected 20-32"),
        (&["pool", "add", "p2", "fd00:81::/64", "--block-size", "64"], "expected 116-128"),
        (&["show", "--ip", "10.80.0.256"], "invalid --ip \"10.80.0.256\""),
    ];
    for (args, want) in cases {
        let run = ipamctl(&env, args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(want), "{args:?}: want {want:?} in {:?}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
    }
    let run = ipamctl(&env, &["release", "--ip", "10.80.0.0/24"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a CIDR"), "{run:#?}");
    let run = ipamctl(&env, &["gc", "--grace", "soon"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("invalid --grace"), "{run:#?}");
    let run = ipamctl(&env, &["config", "set", "--max-blocks-per-host", "4"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--max-blocks-per-host"), "{run:#?}");
    assert!(run.stderr.contains("strict_affinity"), "{run:#?}");

    // Usage errors are clap's: exit 2.
    for args in [&["pool", "add", "p2"][..], &["show", "--blocks", "--host", "n"], &["release"]] {
        let run = ipamctl(&env, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
    }
    let run =
        ipamctl(&env, &["pool", "add", "p2", "10.81.0.0/16", "--ipip-mode", "Sometimes"]).await;
    assert_eq!(run.code, 2, "{run:#?}");

    // etcd flags are checked before any connection.
    let run = ipamctl(&env, &["--etcd-endpoints", "etcd:2379", "pool", "ls"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--etcd-endpoints"), "{run:#?}");

    // Nothing refused was written.
    let json = ipamctl(&env, &["pool", "ls", "-o", "json"]).await.ok().json();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(
        ipamctl(&env, &["config", "show", "-o", "json"]).await.ok().json()["maxBlocksPerHost"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_reports_pools_blocks_addresses_hosts_and_borrowing() {
    let env = Env::new().await;
    ipamctl(&env, &["pool", "add", "main", "10.90.0.0/16"]).await.ok();
    ipamctl(&env, &["pool", "add", "tiny", "10.91.0.0/26"]).await.ok();
    let mut n1 = Vec::new();
    for c in ["a", "b", "c"] {
        n1.push(allocate(&env, "n1", c, OLD).await);
    }
    let n2 = allocate(&env, "n2", "d", OLD).await;
    // tiny's only block goes to n1; n2 then has to borrow from it.
    let tiny = |node: &str, c: &str| AssignRequest {
        attrs: attrs(node, c, OLD),
        v4_pools: vec!["tiny".into()],
        ..request(&format!("net.{c}.eth0"), 1, 0)
    };
    let own = env.allocator("n1").assign(&tiny("n1", "t1")).await.unwrap().v4[0].addr();
    let borrowed = env.allocator("n2").assign(&tiny("n2", "t2")).await.unwrap().v4[0].addr();
    assert_eq!(block_of(&env, borrowed).await, block_of(&env, own).await);

    let show = ipamctl(&env, &["show"]).await.ok();
    let want = "\
POOL   CIDR           STATE     BLOCKS   IPS TOTAL   IPS IN USE       IPS FREE
main   10.90.0.0/16   enabled        2       65536       4 (0%)   65532 (100%)
tiny   10.91.0.0/26   enabled        1          64       2 (3%)       62 (97%)
";
    assert_eq!(show.stdout, want);
    let json = ipamctl(&env, &["show", "-o", "json"]).await.ok().json();
    assert_eq!(json["pools"][0]["in_use"], 4);
    assert_eq!(json["pools"][0]["free"], 65532);

    let blocks = ipamctl(&env, &["show", "--blocks"]).await.ok();
    let lines: Vec<&str> = blocks.stdout.lines().collect();
    assert_eq!(
        lines[0].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>(),
        ["BLOCK", "POOL", "AFFINITY", "IPS TOTAL", "IPS IN USE", "IPS FREE", "BORROWED"]
    );
    let n1_block = block_of(&env, n1[0]).await.to_string();
    let row = lines.iter().find(|l| l.starts_with(&n1_block)).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, [&n1_block, "main", "host:n1", "64", "3", "(5%)", "61", "(95%)", "0"]);
    let tiny_row = lines.iter().find(|l| l.starts_with("10.91.0.0/26")).unwrap();
    assert!(tiny_row.ends_with("   1"), "one borrowed address: {tiny_row:?}");

    let ip = ipamctl(&env, &["show", "--ip", &n1[1].to_string()]).await.ok();
    assert!(ip.stdout.starts_with(&format!("{} is assigned\n", n1[1])), "{}", ip.stdout);
    assert!(ip.stdout.contains("Handle:   net.b.eth0\n"), "{}", ip.stdout);
    assert!(ip.stdout.contains("(affine to host n1)"), "{}", ip.stdout);
    assert!(ip.stdout.contains("  containerID   b\n"), "{}", ip.stdout);
    let free = ipamctl(&env, &["show", "--ip", "10.90.255.1"]).await.ok();
    assert_eq!(free.stdout, "10.90.255.1 is not assigned\n");
    let outside = ipamctl(&env, &["show", "--ip", "192.0.2.1"]).await.ok();
    assert_eq!(outside.stdout, "192.0.2.1 is not assigned (it is not inside any IP pool)\n");
    let json =
        ipamctl(&env, &["show", "--ip", &borrowed.to_string(), "-o", "json"]).await.ok().json();
    assert_eq!(json["assigned"], true);
    assert_eq!(json["handle"], "net.t2.eth0");
    assert_eq!(json["block_host"], "n1");
    assert_eq!(json["borrowed"], true);
    assert_eq!(json["attributes"]["node"], "n2");

    let host = ipamctl(&env, &["show", "--host", "n2"]).await.ok();
    assert!(host.stdout.starts_with("Blocks affine to n2: 1\n"), "{}", host.stdout);
    assert!(host.stdout.contains("Addresses allocated to n2: 2\n"), "{}", host.stdout);
    let brow = host.stdout.lines().find(|l| l.contains(&borrowed.to_string())).unwrap();
    assert!(brow.contains("net.t2.eth0") && brow.ends_with("yes"), "{brow:?}");
    let json = ipamctl(&env, &["show", "--host", "n1", "-o", "json"]).await.ok().json();
    assert_eq!(json["blocks"].as_array().unwrap().len(), 2);
    assert_eq!(json["allocations"].as_array().unwrap().len(), 4);
    let own_row = host.stdout.lines().find(|l| l.contains(&format!("{n2} "))).unwrap();
    assert!(own_row.contains("net.d.eth0") && own_row.ends_with("no"), "{own_row:?}");

    let b = ipamctl(&env, &["show", "--show-borrowed"]).await.ok();
    let lines: Vec<&str> = b.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", b.stdout);
    assert_eq!(lines[0], "IP          BORROWING NODE   BLOCK          BLOCK OWNER   HANDLE");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [borrowed.to_string().as_str(), "n2", "10.91.0.0/26", "n1", "net.t2.eth0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_by_address_and_by_handle() {
    let env = Env::new().await;
    ipamctl(&env, &["pool", "add", "p", "10.92.0.0/16"]).await.ok();
    let a = allocate(&env, "n1", "a", OLD).await;
    let b = allocate(&env, "n1", "b", OLD).await;
    let two = env
        .allocator("n1")
        .assign(&AssignRequest { attrs: attrs("n1", "c", OLD), ..request("net.c.eth0", 2, 0) })
        .await
        .unwrap();

    let out = ipamctl(&env, &["release", "--ip", &a.to_string()]).await.ok();
    assert_eq!(out.stdout, format!("Released {a} (handle net.a.eth0)\n"));
    let out = ipamctl(&env, &["show", "--ip", &a.to_string()]).await.ok();
    assert_eq!(out.stdout, format!("{a} is not assigned\n"));
    // Idempotent.
    let out = ipamctl(&env, &["release", "--ip", &a.to_string()]).await.ok();
    assert_eq!(out.stdout, format!("{a} is not assigned; nothing to release\n"));

    // A guard that does not match refuses and leaves the address alone.
    let wrong = ipamctl(&env, &["release", "--ip", &b.to_string(), "--handle", "net.x.eth0"]).await;
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert!(wrong.stderr.contains("held by handle net.b.eth0, not net.x.eth0"), "{wrong:#?}");
    assert!(env.allocator("n1").get_assignment(b).await.unwrap().is_some());
    let json =
        ipamctl(&env, &["release", "--ip", &b.to_string(), "--handle", "net.b.eth0", "-o", "json"])
            .await
            .ok()
            .json();
    assert_eq!(json["released"], true);
    assert_eq!(json["handle"], "net.b.eth0");

    let out = ipamctl(&env, &["release", "--handle", "net.c.eth0"]).await.ok();
    let both: Vec<String> = two.v4.iter().map(|n| n.addr().to_string()).collect();
    assert_eq!(out.stdout, format!("Released {} (handle net.c.eth0)\n", both.join(", ")));
    let out = ipamctl(&env, &["release", "--handle", "net.c.eth0"]).await.ok();
    assert_eq!(out.stdout, "Handle net.c.eth0 holds no addresses; nothing to release\n");

    let usage = env.allocator("n1").usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 0);
    assert!(env.client.get(&env.keys.handle("net.c.eth0")).await.unwrap().is_none());
    let (code, report) = report_json(&env).await;
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_leaks_and_gc_repairs_them() {
    let env = Env::new().await;
    let netns = tempfile::tempdir().unwrap();
    let netns_dir = netns.path().to_str().unwrap().to_string();
    ipamctl(&env, &["pool", "add", "p", "10.93.0.0/16"]).await.ok();
    env.put_node("n1", &[]).await;
    // Healthy: every allocation has its endpoint.
    for c in ["w1", "w2"] {
        let ip = allocate(&env, "n1", c, OLD).await;
        put_wep(&env, "n1", c, ip).await;
    }
    let clean = ipamctl(&env, &["check"]).await;
    assert_eq!(clean.code, 0, "{clean:#?}");
    assert!(clean.stdout.contains("2 allocations, 2 workload endpoints, 1 nodes."), "{clean:#?}");
    assert!(clean.stdout.ends_with("Check complete: no problems found.\n"), "{clean:#?}");
    assert_eq!(report_json(&env).await.0, 0);

    // Injected: a handle without allocation, an allocation without handle (and without
    // endpoint: leaked), and a block whose JSON is corrupt.
    let live = allocate(&env, "n1", "w3", OLD).await;
    put_wep(&env, "n1", "w3", live).await;
    let cidr = block_of(&env, live).await;
    let ghost = IpamHandle { block: [(cidr.to_string(), 1)].into(), ..IpamHandle::default() };
    put_json(&env, &env.keys.handle("net.ghost.eth0"), &ghost).await;
    let mut orphan = None;
    edit_block(&env, cidr, |b| {
        orphan = b.assign(1, "net.orphan.eth0", &attrs("n1", "orphan", OLD)).first().copied();
    })
    .await;
    let orphan = orphan.unwrap();
    let corrupt_key = env.keys.block("10.93.200.0/26".parse().unwrap());
    env.put_raw(&corrupt_key, b"{\"cidr\": \"10.93.200.0/26\", \"allocations\": [").await;
    // And a leaked allocation whose container still has a netns on this node.
    let alive = allocate(&env, "n1", "alive", OLD).await;
    std::fs::write(netns.path().join("alive"), b"").unwrap();

    let dirty = ipamctl(&env, &["check"]).await;
    assert_eq!(dirty.code, 1, "{dirty:#?}");
    for want in [
        "Corrupt records (skipped by the allocator): 1\n",
        "Leaked addresses (no workload endpoint accounts for them): 2\n",
        "Handles without allocations: 1\n  HANDLE           RECORDED\n  net.ghost.eth0   ",
        "Allocations without handles: 1\n",
        "Check complete: found 5 problems.\n",
    ] {
        assert!(dirty.stdout.contains(want), "want {want:?} in:\n{}", dirty.stdout);
    }
    let (code, before) = report_json(&env).await;
    assert_eq!(code, 1);
    assert_eq!(names(&before, "corrupt_records", "key"), [corrupt_key.as_str()]);
    assert_eq!(names(&before, "handles_without_allocations", "handle"), ["net.ghost.eth0"]);
    assert_eq!(names(&before, "allocations_without_handles", "ip"), [orphan.to_string()]);
    let mut leaked = names(&before, "leaked", "ip");
    leaked.sort();
    let mut want = vec![orphan.to_string(), alive.to_string()];
    want.sort();
    assert_eq!(leaked, want);

    // Dry run: says what it would do, writes nothing.
    let gc_args = ["gc", "--grace", "10m", "--node", "n1", "--netns-dir", netns_dir.as_str()];
    let dry = ipamctl(&env, &[&gc_args[..], &["--dry-run"]].concat()).await.ok();
    assert!(dry.stdout.starts_with("gc dry run (nothing changed)"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains(&format!("Addresses to release: 1\n  {orphan}\n")),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("Handles to delete: 1\n  net.ghost.eth0\n"), "{}", dry.stdout);
    assert!(dry.stdout.contains("still has a network namespace"), "{}", dry.stdout);
    assert_eq!(report_json(&env).await, (1, before.clone()), "a dry run must not write");

    // gc cannot repair what it cannot read; the operator removes the corrupt block.
    env.client.delete(&corrupt_key, None).await.unwrap();
    let done = ipamctl(&env, &[&gc_args[..], &["-o", "json"]].concat()).await.ok().json();
    assert_eq!(done["released"], serde_json::json!([orphan.to_string()]));
    assert_eq!(done["handles_deleted"][0], "net.ghost.eth0");
    assert_eq!(done["kept"][0]["ip"], alive.to_string());
    assert!(env.allocator("n1").get_assignment(orphan).await.unwrap().is_none());

    // The namespace is gone: the last leak goes too, and check is clean.
    std::fs::remove_file(netns.path().join("alive")).unwrap();
    let done = ipamctl(&env, &gc_args).await.ok();
    assert!(
        done.stdout.contains(&format!("Released addresses: 1\n  {alive}\n")),
        "{}",
        done.stdout
    );
    let after = ipamctl(&env, &["check"]).await;
    assert_eq!(after.code, 0, "{after:#?}");
    assert!(after.stdout.contains("3 allocations, 3 workload endpoints"), "{}", after.stdout);
    assert!(env.allocator("n1").get_assignment(live).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_allocator_leftovers_are_reported_and_repaired() {
    let env = Env::new().await;
    ipamctl(&env, &["pool", "add", "p", "10.94.0.0/16"]).await.ok();
    env.put_node("n1", &[]).await;
    let ip = allocate(&env, "n1", "w1", OLD).await;
    put_wep(&env, "n1", "w1", ip).await;
    let cidr = block_of(&env, ip).await;

    // Calico's allocator writes the handle, then the block. Killed in between, it leaves a
    // handle that counts an address the block never got.
    let handle = IpamHandle { block: [(cidr.to_string(), 1)].into(), ..IpamHandle::default() };
    put_json(&env, &env.keys.handle("net.killed.eth0"), &handle).await;
    // Its release order is block first, then handle: killed in between, the handle of a
    // released address still counts it, one more than the block holds.
    let two = IpamHandle { block: [(cidr.to_string(), 2)].into(), ..IpamHandle::default() };
    put_json(&env, &env.keys.handle("net.w1.eth0"), &two).await;
    // A claim killed before its affinity was confirmed: block created, affinity pending.
    let claimed: ipnet::IpNet = "10.94.77.0/26".parse().unwrap();
    let block = Block::new(claimed, Some("n1"), 1).unwrap();
    put_json(&env, &env.keys.block(claimed), block.record()).await;
    let pending = BlockAffinity { state: AffinityState::Pending, ..BlockAffinity::default() };
    put_json(&env, &env.keys.affinity("n1", claimed), &pending).await;

    let run = ipamctl(&env, &["check"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("Handles without allocations: 1\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Handles whose counts disagree with the blocks: 1\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Unconfirmed affinities: 1\n"), "{}", run.stdout);
    let (_, report) = report_json(&env).await;
    assert_eq!(names(&report, "handles_without_allocations", "handle"), ["net.killed.eth0"]);
    assert_eq!(names(&report, "handle_count_mismatches", "handle"), ["net.w1.eth0"]);
    assert_eq!(names(&report, "pending_affinities", "block"), [claimed.to_string()]);

    let gc = ipamctl(&env, &["gc", "--node", "n1", "--netns-dir", "/nonexistent"]).await.ok();
    assert!(gc.stdout.contains("Handles deleted: 1\n  net.killed.eth0\n"), "{}", gc.stdout);
    assert!(gc.stdout.contains("Handles rewritten: 1\n  net.w1.eth0\n"), "{}", gc.stdout);
    assert!(gc.stdout.contains("Affinities confirmed: 1\n"), "{}", gc.stdout);
    let after = ipamctl(&env, &["check"]).await;
    assert_eq!(after.code, 0, "{after:#?}");
    let fixed: IpamHandle =
        env.client.get_json(&env.keys.handle("net.w1.eth0")).await.unwrap().unwrap().value;
    assert_eq!(fixed.block[&cidr.to_string()], 1);
}
