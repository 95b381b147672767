//! The etcd client and watcher against a real etcd: compare-and-swap semantics, one-round-trip
//! reads, watch completeness, compaction recovery, TLS, timeouts and leases.

use std::time::{Duration, Instant};

use datastore::client::{Client, Cmp, Error, EtcdConfig, Op, Read};
use datastore::watch::{WatchEvent, Watcher};
use serde::{Deserialize, Serialize};
use testkit::Etcd;

/// A prefix no other test uses.
fn prefix() -> String {
    format!("/tt/{}/", testkit::unique_name("p", 16))
}

fn config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::new(vec![etcd.endpoint()])
}

async fn connect(etcd: &Etcd) -> Client {
    Client::connect(&config(etcd)).await.expect("connect to test etcd")
}

/// The next watch event, failing the test if none comes within 10 s.
async fn next_event(watcher: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("no watch event within 10 s")
        .expect("watch failed")
}

#[tokio::test]
async fn update_detects_a_conflict_and_reports_the_current_value() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}k", prefix());
    let rev1 = client.create(&key, "v1").await.unwrap();
    let rev2 = client.update(&key, "v2", rev1).await.unwrap();
    assert!(rev2 > rev1);

    // A writer holding the old revision loses, and learns the value that beat it.
    match client.update(&key, "stale", rev1).await {
        Err(Error::Conflict { key: k, current }) => {
            assert_eq!(k, key);
            assert_eq!(current.value, b"v2");
            assert_eq!(current.mod_revision, rev2);
            assert_eq!(current.version, 2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"v2");
    assert!(client.update(&key, "x", rev1).await.unwrap_err().is_retryable());

    client.delete(&key, None).await.unwrap();
    assert!(matches!(client.update(&key, "v3", rev2).await, Err(Error::NotFound { .. })));
    assert_eq!(client.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn txn_or_read_writes_on_a_true_guess_and_reads_on_a_false_one() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let (sub, a, out) = (format!("{p}sub/"), format!("{p}sub/a"), format!("{p}out"));
    let rev_a = client.create(&a, "a1").await.unwrap();
    let reads = [Read::Prefix(sub.clone()), Read::Key(out.clone())];
    let guess = |value: &[u8], since: i64| {
        vec![
            Cmp::Value(a.clone(), value.to_vec()),
            Cmp::NothingNewerUnder { prefix: sub.clone(), revision: since },
        ]
    };
    let write = || vec![Op::Put { key: out.clone(), value: b"w".to_vec(), lease: None }];

    // A wrong value: nothing written, and the reads come back instead.
    let wrong = client.txn_or_read(guess(b"a0", rev_a), write(), &reads).await.unwrap();
    assert!(!wrong.succeeded);
    assert_eq!(wrong.listings.len(), 2);
    assert_eq!(wrong.listings[0].kvs.len(), 1);
    assert_eq!(wrong.listings[0].kvs[0].value, b"a1");
    assert!(wrong.listings[1].kvs.is_empty());
    assert_eq!(client.get(&out).await.unwrap(), None);

    // A key added under the prefix after the guessed revision also fails the guess.
    let rev_b = client.create(&format!("{sub}b"), "b1").await.unwrap();
    let added = client.txn_or_read(guess(b"a1", rev_a), write(), &reads).await.unwrap();
    assert!(!added.succeeded);
    assert_eq!(added.listings[0].kvs.len(), 2);
    assert_eq!(client.get(&out).await.unwrap(), None);

    // The right value and a revision covering everything under the prefix: written.
    let right = client.txn_or_read(guess(b"a1", rev_b), write(), &reads).await.unwrap();
    assert!(right.succeeded && right.listings.is_empty());
    let stored = client.get(&out).await.unwrap().unwrap();
    assert_eq!((stored.value.as_slice(), stored.mod_revision), (&b"w"[..], right.revision));

    // An empty prefix holds nothing newer than anything.
    let empty = Cmp::NothingNewerUnder { prefix: format!("{p}none/"), revision: 1 };
    assert!(client.txn_or_read(vec![empty], write(), &reads).await.unwrap().succeeded);
}

#[tokio::test]
async fn create_refuses_an_existing_key() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}k", prefix());
    let rev = client.create(&key, "first").await.unwrap();
    match client.create(&key, "second").await {
        Err(Error::AlreadyExists { key: k, current }) => {
            assert_eq!(k, key);
            assert_eq!(current.value, b"first");
            assert_eq!(current.mod_revision, rev);
            assert_eq!(current.create_revision, rev);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"first");
}

#[tokio::test]
async fn delete_honours_the_expected_revision() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}k", prefix());
    let rev1 = client.create(&key, "a").await.unwrap();
    let rev2 = client.update(&key, "b", rev1).await.unwrap();

    assert!(matches!(client.delete(&key, Some(rev1)).await, Err(Error::Conflict { .. })));
    assert!(client.get(&key).await.unwrap().is_some(), "a stale delete removed the key");
    assert!(client.delete(&key, Some(rev2)).await.unwrap());
    assert_eq!(client.get(&key).await.unwrap(), None);
    assert!(matches!(client.delete(&key, Some(rev2)).await, Err(Error::NotFound { .. })));
    assert!(!client.delete(&key, None).await.unwrap());
}

#[tokio::test]
async fn put_if_absent_creates_a_default_once_and_never_replaces_a_value() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let (dflt, other) = (format!("{p}profile"), format!("{p}endpoint"));
    let ops = |n: &str| {
        vec![
            Op::Put { key: other.clone(), value: n.as_bytes().to_vec(), lease: None },
            Op::PutIfAbsent { key: dflt.clone(), value: format!("default {n}").into_bytes() },
        ]
    };
    // Absent: created with the rest of the transaction.
    let first = client.txn(vec![], ops("1")).await.unwrap();
    assert!(first.succeeded);
    let stored = client.get(&dflt).await.unwrap().unwrap();
    assert_eq!((stored.value.as_slice(), stored.mod_revision), (&b"default 1"[..], first.revision));

    // Present (here: replaced by an operator): left alone, and the transaction still applies.
    client.update(&dflt, "operator's", stored.mod_revision).await.unwrap();
    let second = client.txn(vec![], ops("2")).await.unwrap();
    assert!(second.succeeded);
    assert_eq!(client.get(&dflt).await.unwrap().unwrap().value, b"operator's");
    assert_eq!(client.get(&other).await.unwrap().unwrap().value, b"2");

    // A failed condition writes neither.
    client.delete(&dflt, None).await.unwrap();
    let failed = client.txn(vec![Cmp::Absent(other.clone())], ops("3")).await.unwrap();
    assert!(!failed.succeeded);
    assert_eq!(client.get(&dflt).await.unwrap(), None);
    assert_eq!(client.get(&other).await.unwrap().unwrap().value, b"2");
}

#[tokio::test]
async fn txn_applies_all_or_nothing() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let rev_a = client.create(&a, "a1").await.unwrap();
    let ops = vec![
        Op::Put { key: a.clone(), value: b"a2".to_vec(), lease: None },
        Op::Put { key: b.clone(), value: b"b1".to_vec(), lease: None },
        Op::Delete { key: c.clone() },
    ];

    // One false condition: nothing is written, and the compared keys come back as they are.
    let failed = client
        .txn(vec![Cmp::ModRevision(a.clone(), rev_a), Cmp::Exists(b.clone())], ops.clone())
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(failed.current.len(), 1, "only existing compared keys are reported");
    assert_eq!(failed.current[0].key, a);
    assert_eq!(failed.current[0].value, b"a1");
    assert_eq!(client.get(&a).await.unwrap().unwrap().value, b"a1");
    assert_eq!(client.get(&b).await.unwrap(), None);

    client.create(&c, "c1").await.unwrap();
    let done = client
        .txn(vec![Cmp::ModRevision(a.clone(), rev_a), Cmp::Absent(b.clone())], ops)
        .await
        .unwrap();
    assert!(done.succeeded);
    assert!(done.current.is_empty());
    let listing = client.list(&p).await.unwrap();
    let keys: Vec<(&str, &[u8], i64)> = listing
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision))
        .collect();
    assert_eq!(
        keys,
        vec![(a.as_str(), &b"a2"[..], done.revision), (b.as_str(), &b"b1"[..], done.revision)]
    );
}

#[tokio::test]
async fn get_many_is_one_round_trip_at_one_revision() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    for i in 0..5 {
        client.create(&format!("{p}blocks/{i}"), format!("b{i}")).await.unwrap();
    }
    client.create(&format!("{p}config"), "cfg").await.unwrap();

    let before = client.round_trips();
    let listings = client
        .get_many(&[
            Read::Key(format!("{p}config")),
            Read::Prefix(format!("{p}blocks/")),
            Read::Key(format!("{p}missing")),
        ])
        .await
        .unwrap();
    assert_eq!(client.round_trips() - before, 1);
    assert_eq!(listings.len(), 3);
    assert_eq!(listings[0].kvs[0].value, b"cfg");
    assert_eq!(listings[1].kvs.len(), 5);
    assert!(listings[1].kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert!(listings[2].kvs.is_empty());
    assert!(listings.iter().all(|l| l.revision == listings[0].revision));
}

#[tokio::test]
async fn every_call_counts_one_round_trip() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}k", prefix());
    let clone = client.clone();
    let start = client.round_trips();
    let writes = client.writes_attempted();
    client.get(&key).await.unwrap();
    assert_eq!(client.writes_attempted(), writes, "a read is no write");
    let rev = clone.create(&key, "1").await.unwrap();
    let _ = client.create(&key, "again").await;
    client.update(&key, "2", rev).await.unwrap();
    client.get(&key).await.unwrap();
    assert_eq!(client.round_trips() - start, 5, "clones share one counter");
    assert_eq!(client.writes_attempted() - writes, 3, "a refused create was still sent");
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Affinity {
    state: String,
}

#[tokio::test]
async fn json_helpers_round_trip_and_name_bad_keys() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let key = format!("{p}affinity");
    let rev = client.create_json(&key, &Affinity { state: "pending".into() }).await.unwrap();
    let stored = client.get_json::<Affinity>(&key).await.unwrap().unwrap();
    assert_eq!(stored.value.state, "pending");
    assert_eq!(stored.mod_revision, rev);
    let rev2 =
        client.update_json(&key, &Affinity { state: "confirmed".into() }, rev).await.unwrap();
    assert_eq!(client.get_json::<Affinity>(&key).await.unwrap().unwrap().mod_revision, rev2);
    assert!(client.get_json::<Affinity>(&format!("{p}none")).await.unwrap().is_none());

    let bad = format!("{p}bad");
    client.create(&bad, "{not json").await.unwrap();
    match client.get_json::<Affinity>(&bad).await {
        Err(Error::Decode { key, .. }) => assert_eq!(key, bad),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_pages_through_a_hundred_thousand_keys() {
    let etcd = Etcd::start();
    let client = connect(&etcd).await;
    let p = "/big/";
    let total = 100_000;
    // 100 puts per transaction keeps the set-up to a thousand round trips.
    for chunk in 0..total / 100 {
        let ops = (0..100)
            .map(|i| Op::Put {
                key: format!("{p}{:06}", chunk * 100 + i),
                value: b"{}".to_vec(),
                lease: None,
            })
            .collect();
        assert!(client.txn(vec![], ops).await.unwrap().succeeded);
    }
    client.create("/big0", "just past the prefix").await.unwrap();

    let before = client.round_trips();
    let listing = client.list(p).await.unwrap();
    assert_eq!(listing.kvs.len(), total);
    assert!(client.round_trips() - before >= 100, "a 100k listing must be paged");
    for (i, kv) in listing.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("{p}{i:06}"));
    }
    assert_eq!(listing.revision, etcd.revision(), "the listing is pinned to one revision");
}

#[tokio::test]
async fn watch_sees_every_change_in_order() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    client.create(&format!("{p}existing"), "e").await.unwrap();
    let mut watcher = Watcher::new(client.clone(), p.clone());
    let snapshot_revision = match next_event(&mut watcher).await {
        WatchEvent::Snapshot { kvs, revision } => {
            assert_eq!(kvs.len(), 1);
            assert_eq!(kvs[0].key, format!("{p}existing"));
            revision
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    };
    assert_eq!(watcher.revision(), snapshot_revision);

    let writer = client.clone();
    let p2 = p.clone();
    let writes = tokio::spawn(async move {
        let mut revisions = Vec::new();
        for i in 0..200 {
            revisions.push(writer.create(&format!("{p2}k{i:03}"), format!("{i}")).await.unwrap());
        }
        writer.delete(&format!("{p2}existing"), None).await.unwrap();
        revisions
    });
    // Writes outside the prefix must not show up.
    client.create(&format!("{}other", prefix()), "x").await.unwrap();

    let mut last = snapshot_revision;
    for i in 0..200 {
        match next_event(&mut watcher).await {
            WatchEvent::Put(kv) => {
                assert_eq!(kv.key, format!("{p}k{i:03}"));
                assert_eq!(kv.value, format!("{i}").into_bytes());
                assert!(kv.mod_revision > last, "events out of order");
                last = kv.mod_revision;
            }
            other => panic!("expected put #{i}, got {other:?}"),
        }
    }
    let revisions = writes.await.unwrap();
    assert_eq!(*revisions.last().unwrap(), last);
    match next_event(&mut watcher).await {
        WatchEvent::Delete { key, mod_revision } => {
            assert_eq!(key, format!("{p}existing"));
            assert!(mod_revision > last);
            assert_eq!(watcher.revision(), mod_revision);
        }
        other => panic!("expected the delete, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_compacted_revision_relists_a_consistent_snapshot() {
    let etcd = Etcd::start();
    let client = connect(&etcd).await;
    let p = "/compact/";
    for i in 0..10 {
        client.create(&format!("{p}{i}"), "v1").await.unwrap();
    }
    let old = client.list(p).await.unwrap().revision;
    for i in 0..5 {
        let kv = client.get(&format!("{p}{i}")).await.unwrap().unwrap();
        client.update(&kv.key, "v2", kv.mod_revision).await.unwrap();
    }
    client.delete(&format!("{p}9"), None).await.unwrap();
    client.create(&format!("{p}new"), "v1").await.unwrap();
    etcd.compact_latest();

    // Resuming from before the compaction cannot replay history: expect a fresh snapshot.
    let mut watcher = Watcher::from_revision(client.clone(), p, old);
    let listing = client.list(p).await.unwrap();
    match next_event(&mut watcher).await {
        WatchEvent::Snapshot { kvs, revision } => {
            assert_eq!(kvs, listing.kvs);
            assert_eq!(revision, listing.revision);
        }
        other => panic!("expected a snapshot after compaction, got {other:?}"),
    }
    // And it keeps following changes afterwards.
    let rev = client.create(&format!("{p}after"), "x").await.unwrap();
    match next_event(&mut watcher).await {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.as_str(), kv.mod_revision), ("/compact/after", rev));
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_live_revision_replays_history_without_a_snapshot() {
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let start = client.create(&format!("{p}a"), "1").await.unwrap();
    let rev_b = client.create(&format!("{p}b"), "2").await.unwrap();
    let mut watcher = Watcher::from_revision(client, p.clone(), start);
    match next_event(&mut watcher).await {
        WatchEvent::Put(kv) => assert_eq!((kv.key, kv.mod_revision), (format!("{p}b"), rev_b)),
        other => panic!("expected the put after the start revision, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_resumes_after_etcd_restarts() {
    let mut etcd = Etcd::start();
    let client =
        Client::connect(&EtcdConfig { request_timeout: Duration::from_secs(1), ..config(&etcd) })
            .await
            .unwrap();
    let p = "/restart/";
    let mut watcher = Watcher::new(client.clone(), p);
    assert!(matches!(next_event(&mut watcher).await, WatchEvent::Snapshot { .. }));
    let rev = client.create(&format!("{p}before"), "1").await.unwrap();
    assert!(
        matches!(next_event(&mut watcher).await, WatchEvent::Put(kv) if kv.mod_revision == rev)
    );

    etcd.stop();
    // While etcd is down, try_next reports a retryable error and stays usable.
    let err = tokio::time::timeout(Duration::from_secs(10), watcher.try_next())
        .await
        .expect("no error while etcd is down")
        .expect_err("an event from a stopped etcd");
    assert!(err.is_retryable(), "{err:?}");
    etcd.start_again();

    let rev = client.create(&format!("{p}after"), "2").await.unwrap();
    // Resumed from the last revision: the next event is the new write, not a re-list.
    match next_event(&mut watcher).await {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, rev),
        other => panic!("expected the write made after the restart, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_is_a_stream() {
    use futures::StreamExt;
    let client = connect(Etcd::shared()).await;
    let p = prefix();
    let mut stream = Box::pin(Watcher::new(client.clone(), p.clone()).into_stream());
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Snapshot { ref kvs, .. } if kvs.is_empty()));
    client.create(&format!("{p}x"), "1").await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(second, WatchEvent::Put(kv) if kv.key == format!("{p}x")));
}

#[tokio::test]
async fn tls_needs_a_client_certificate_signed_by_the_ca() {
    let etcd = Etcd::builder().tls(true).start();
    let tls = etcd.tls_files().unwrap();
    let good = EtcdConfig {
        ca_file: Some(tls.ca.clone()),
        cert_file: Some(tls.client_cert.clone()),
        key_file: Some(tls.client_key.clone()),
        connect_timeout: Duration::from_secs(3),
        ..config(&etcd)
    };
    let client = Client::connect(&good).await.expect("TLS with a good client certificate");
    client.create("/tls/k", "v").await.unwrap();
    assert_eq!(client.get("/tls/k").await.unwrap().unwrap().value, b"v");
    // The CNI plugin's kind of client: the same files, the handshake on the first request.
    let lazy = Client::connect_unprobed(&good).await.unwrap();
    assert_eq!(lazy.get("/tls/k").await.unwrap().unwrap().value, b"v");
    let anonymous = EtcdConfig { cert_file: None, key_file: None, ..good.clone() };
    let lazy = Client::connect_unprobed(&anonymous).await.unwrap();
    let err = lazy.get("/tls/k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. } | Error::Tls { .. }), "{err:?}");

    let refused = |result: Result<Client, Error>, what: &str| match result {
        Err(e @ (Error::Unavailable { .. } | Error::Tls { .. })) => e,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    let anonymous = EtcdConfig { cert_file: None, key_file: None, ..good.clone() };
    let started = Instant::now();
    let err = refused(Client::connect(&anonymous).await, "no client certificate");
    eprintln!("no client certificate: {err}");
    assert!(started.elapsed() < Duration::from_secs(4), "refusal took {:?}", started.elapsed());

    let foreign = EtcdConfig {
        cert_file: Some(tls.foreign_client_cert.clone()),
        key_file: Some(tls.foreign_client_key.clone()),
        ..good.clone()
    };
    let err = refused(Client::connect(&foreign).await, "foreign CA");
    eprintln!("foreign CA: {err}");

    // A missing file is named before any connection is tried.
    let missing = EtcdConfig { ca_file: Some(tls.dir.join("nope.pem")), ..good.clone() };
    match Client::connect(&missing).await {
        Err(Error::Tls { path: Some(path), .. }) => assert!(path.ends_with("nope.pem")),
        other => panic!("expected a TLS file error, got {other:?}"),
    }
    // A key where the certificate belongs is caught by its PEM label.
    let swapped = EtcdConfig { cert_file: Some(tls.client_key.clone()), ..good };
    assert!(matches!(Client::connect(&swapped).await, Err(Error::Tls { path: Some(_), .. })));
}

#[tokio::test]
async fn unreachable_endpoint_fails_within_the_connect_timeout() {
    // A port nobody listens on: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let timeout = Duration::from_secs(2);
    let config = EtcdConfig {
        connect_timeout: timeout,
        ..EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")])
    };
    let started = Instant::now();
    let err = Client::connect(&config).await.unwrap_err();
    assert!(
        started.elapsed() <= timeout + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&port.to_string()), "error does not name the endpoint: {err}");

    // An endpoint that never answers must also give up on time. A listener with a backlog of
    // 0 whose one queued connection is never accepted drops every further SYN, like a host
    // that is down, without a packet leaving the machine.
    let silent = tokio::net::TcpSocket::new_v4().unwrap();
    silent.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _listener = silent.listen(0).unwrap();
    let _queued = std::net::TcpStream::connect(silent_addr).unwrap();
    let config = EtcdConfig {
        connect_timeout: timeout,
        ..EtcdConfig::new(vec![format!("http://{silent_addr}")])
    };
    let started = Instant::now();
    let err = Client::connect(&config).await.unwrap_err();
    let took = started.elapsed();
    // Not refused at once: it really waited for an answer, and no longer than it may.
    assert!(took >= timeout / 2 && took <= timeout + Duration::from_millis(500), "took {took:?}");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn an_unprobed_client_learns_of_a_refused_endpoint_on_its_first_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    let timeout = Duration::from_secs(5);

    // Alone: the first request fails at once (not after the timeout), retryable, naming it.
    let config = EtcdConfig { connect_timeout: timeout, ..EtcdConfig::new(vec![dead.clone()]) };
    let client = Client::connect_unprobed(&config).await.expect("no connection is made yet");
    let started = Instant::now();
    let err = client.get("/anything").await.unwrap_err();
    assert!(started.elapsed() < timeout / 2, "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "error does not name the endpoint: {err}");

    // Before a live one: even a write (never resent once sent) goes to the live endpoint,
    // because the refused one provably never received it.
    let etcd = Etcd::shared();
    let config =
        EtcdConfig { connect_timeout: timeout, ..EtcdConfig::new(vec![dead, etcd.endpoint()]) };
    let client = Client::connect_unprobed(&config).await.unwrap();
    let key = format!("{}k", prefix());
    client.create(&key, "v").await.expect("the write reaches the live endpoint");
    assert_eq!(connect(etcd).await.get(&key).await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn a_second_endpoint_takes_over_when_the_first_is_down() {
    let etcd = Etcd::shared();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}"), etcd.endpoint()]);
    let client = Client::connect(&config).await.expect("one live endpoint is enough");
    let key = format!("{}k", prefix());
    client.create(&key, "v").await.unwrap();
    assert!(client.get(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn requests_fail_over_when_the_active_endpoint_dies() {
    let mut first = Etcd::start();
    let second = Etcd::shared();
    let config = EtcdConfig::new(vec![first.endpoint(), second.endpoint()]);
    let client = Client::connect(&config).await.unwrap();
    let key = format!("{}k", prefix());
    client.create(&key, "on the first").await.unwrap();
    assert!(
        second.etcdctl(["get", &key]).stdout.is_empty(),
        "the first endpoint was not used first"
    );

    first.stop();
    // Refused connections prove the request was never sent, so reads and writes move on.
    assert_eq!(client.get(&key).await.unwrap(), None, "not answered by the second endpoint");
    client.create(&key, "on the second").await.unwrap();
    assert_eq!(client.get(&key).await.unwrap().unwrap().value, b"on the second");
    let out = second.etcdctl(["get", "--print-value-only", &key]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "on the second");
}

#[tokio::test]
async fn a_hung_etcd_times_out_requests() {
    let mut etcd = Etcd::start();
    let timeout = Duration::from_millis(500);
    let client =
        Client::connect(&EtcdConfig { request_timeout: timeout, ..config(&etcd) }).await.unwrap();
    etcd.freeze();
    let started = Instant::now();
    let err = client.get("/hung").await.unwrap_err();
    let elapsed = started.elapsed();
    etcd.thaw();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(elapsed < timeout + Duration::from_millis(500), "took {elapsed:?}");
    assert!(client.get("/hung").await.unwrap().is_none(), "client unusable after a timeout");
}

#[tokio::test]
async fn lease_expiry_removes_the_key() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}status", prefix());
    let lease = client.grant_lease(Duration::from_secs(1)).await.unwrap();
    let outcome = client
        .txn(vec![], vec![Op::Put { key: key.clone(), value: b"up".to_vec(), lease: Some(lease) }])
        .await
        .unwrap();
    assert!(outcome.succeeded);
    client.keep_alive(lease).await.unwrap();
    assert!(client.get(&key).await.unwrap().is_some());

    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&key).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "leased key outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(client.keep_alive(lease).await, Err(Error::NotFound { .. })));
    assert!(!client.revoke_lease(lease).await.unwrap());
}

#[tokio::test]
async fn revoking_a_lease_deletes_its_keys() {
    let client = connect(Etcd::shared()).await;
    let key = format!("{}status", prefix());
    let lease = client.grant_lease(Duration::from_mins(1)).await.unwrap();
    client.put(&key, "up", Some(lease)).await.unwrap();
    assert!(client.revoke_lease(lease).await.unwrap());
    assert!(client.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn health_reports_a_leader() {
    let etcd = Etcd::shared();
    let client = connect(etcd).await;
    let status = client.health().await.unwrap();
    assert!(status.leader != 0);
    assert!(status.version.starts_with("3."), "{status:?}");
    assert!(status.revision > 0);
    assert_eq!(client.member_status().await.unwrap().leader, status.leader);
}

#[tokio::test]
async fn list_keys_pages_without_values_at_one_revision() {
    let etcd = Etcd::start();
    let client = connect(&etcd).await;
    let p = "/keys/";
    let total = 25_000;
    // Values large enough that shipping them would show: 1 kB each.
    let value = vec![b'x'; 1024];
    for chunk in 0..total / 100 {
        let ops = (0..100)
            .map(|i| Op::Put {
                key: format!("{p}{:06}", chunk * 100 + i),
                value: value.clone(),
                lease: None,
            })
            .collect();
        assert!(client.txn(vec![], ops).await.unwrap().succeeded);
    }
    client.create("/keys0", "just past the prefix").await.unwrap();
    let rewritten = format!("{p}{:06}", 7);
    let rev = client.put(&rewritten, b"{}".to_vec(), None).await.unwrap();

    let before = client.round_trips();
    let listing = client.list_keys(p).await.unwrap();
    let trips = client.round_trips() - before;
    assert_eq!(listing.keys.len(), total);
    assert!(trips >= 3, "25k keys must take several pages, took {trips} round trips");
    assert!(trips <= 4, "keys-only pages are large; took {trips} round trips");
    for (i, (key, _)) in listing.keys.iter().enumerate() {
        assert_eq!(*key, format!("{p}{i:06}"));
    }
    // Mod revisions are the ones a CAS needs.
    let (_, seven) = &listing.keys[7];
    assert_eq!(*seven, rev);
    let full = client.get(&format!("{p}{:06}", 8)).await.unwrap().unwrap();
    assert_eq!(listing.keys[8].1, full.mod_revision);
    assert_eq!(listing.revision, etcd.revision(), "the listing is pinned to one revision");

    // An empty prefix lists nothing, in one round trip.
    let before = client.round_trips();
    let empty = client.list_keys("/keys-none/").await.unwrap();
    assert!(empty.keys.is_empty());
    assert_eq!(client.round_trips() - before, 1);
}
