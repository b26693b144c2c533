//! The etcd backend against a real etcd (`--features testing`), and the in-memory fake held to
//! the same conformance body so unit tests elsewhere can trust it.
//!
//! Most tests share one server and stay apart by key prefix; tests that compact, stop or
//! reconfigure a server start their own, since those affect every user of the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use trellis_datastore::etcd::{EtcdConfig, EtcdDatastore, EtcdTls};
use trellis_datastore::memory::MemoryDatastore;
use trellis_datastore::testing::EtcdServer;
use trellis_datastore::watcher::{Watcher, WatcherEvent};
use trellis_datastore::{Datastore, DatastoreError, Result, TxnOp, WatchEvent, WatchStream};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn next_event(w: &mut WatchStream) -> Result<WatchEvent> {
    let item = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
    item.expect("watch produced nothing within 10 s")
        .expect("watch stream ended")
}

async fn next_change(w: &mut Watcher) -> WatcherEvent {
    let ev = tokio::time::timeout(Duration::from_secs(15), w.next()).await;
    ev.expect("watcher produced nothing within 15 s")
        .expect("watcher error")
}

fn put_key(ev: &WatchEvent) -> (&str, &[u8]) {
    match ev {
        WatchEvent::Put(kv) => (&kv.key, &kv.value),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// Single-key semantics: create, CAS update, put, delete.
async fn single_key_ops(ds: &dyn Datastore) {
    let r1 = ds.create("a", v("1")).await.unwrap();
    let err = ds.create("a", v("again")).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::AlreadyExists { key } if key == "a"),
        "{err}"
    );
    let kv = ds.get("a").await.unwrap().expect("a was created");
    assert_eq!(
        (kv.key.as_str(), kv.value.as_slice()),
        ("a", b"1".as_slice())
    );
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));

    let r2 = ds.update("a", v("2"), r1).await.unwrap();
    assert!(r2 > r1);
    let err = ds.update("a", v("stale"), r1).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Conflict { key, expected, actual } if key == "a" && *expected == r1 && *actual == r2),
        "{err}"
    );
    let err = ds.update("missing", v("x"), r1).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::NotFound { key } if key == "missing"),
        "{err}"
    );
    assert_eq!(ds.get("missing").await.unwrap(), None);

    let r3 = ds.put("a", v("3")).await.unwrap();
    assert!(r3 > r2);
    let kv = ds.get("a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value),
        (r1, r3, v("3"))
    );

    let err = ds.delete("a", Some(r2)).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Conflict { key, actual, .. } if key == "a" && *actual == r3),
        "{err}"
    );
    ds.delete("a", Some(r3)).await.unwrap();
    let err = ds.delete("a", None).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::NotFound { key } if key == "a"),
        "{err}"
    );
    let err = ds.delete("a", Some(r3)).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::NotFound { key } if key == "a"),
        "{err}"
    );
    ds.put("b", v("1")).await.unwrap();
    ds.delete("b", None).await.unwrap();
    assert_eq!(ds.get("b").await.unwrap(), None);
}

/// Transactions: all or nothing, and the first failing op is the one named.
async fn transactions(ds: &dyn Datastore) {
    let ry = ds.create("t/y", v("y")).await.unwrap();
    let ops = vec![
        TxnOp::Create {
            key: "t/x".into(),
            value: v("x"),
        },
        TxnOp::Update {
            key: "t/y".into(),
            value: v("y2"),
            expected_revision: ry + 1000,
        },
        TxnOp::Create {
            key: "t/y".into(),
            value: v("never"),
        },
    ];
    // The last op writes t/y twice: rejected before anything is evaluated.
    let err = ds.txn(ops.clone()).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Rejected { key, .. } if key == "t/y"),
        "{err}"
    );

    let err = ds.txn(ops[..2].to_vec()).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Conflict { key, expected, actual } if key == "t/y" && *expected == ry + 1000 && *actual == ry),
        "{err}"
    );
    assert_eq!(
        ds.get("t/x").await.unwrap(),
        None,
        "a failed txn writes nothing"
    );

    // Several failing conditions: the first in op order is reported.
    let err = ds
        .txn(vec![
            TxnOp::Check {
                key: "t/y".into(),
                expected_revision: 0,
            },
            TxnOp::Create {
                key: "t/y".into(),
                value: v("dup"),
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Conflict { key, expected: 0, actual } if key == "t/y" && *actual == ry),
        "{err}"
    );
    let err = ds
        .txn(vec![
            TxnOp::Check {
                key: "t/y".into(),
                expected_revision: ry,
            },
            TxnOp::Delete {
                key: "t/gone".into(),
                expected_revision: Some(ry),
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DatastoreError::NotFound { key } if key == "t/gone"),
        "{err}"
    );

    let rev = ds
        .txn(vec![
            TxnOp::Create {
                key: "t/x".into(),
                value: v("x"),
            },
            TxnOp::Update {
                key: "t/y".into(),
                value: v("y2"),
                expected_revision: ry,
            },
            TxnOp::Check {
                key: "t/z".into(),
                expected_revision: 0,
            },
            // A delete without an expected revision has no condition inside a txn.
            TxnOp::Delete {
                key: "t/absent".into(),
                expected_revision: None,
            },
        ])
        .await
        .unwrap();
    let x = ds.get("t/x").await.unwrap().unwrap();
    let y = ds.get("t/y").await.unwrap().unwrap();
    assert_eq!(
        (x.mod_revision, y.mod_revision, y.create_revision),
        (rev, rev, ry)
    );
    assert_eq!(y.value, v("y2"));
    // etcd's default limit on operations per transaction (the fake enforces it too).
    let big: Vec<_> = (0..129)
        .map(|i| TxnOp::Create {
            key: format!("t/big/{i:03}"),
            value: v("1"),
        })
        .collect();
    let err = ds.txn(big).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Rejected { op: "txn", .. }),
        "{err}"
    );
    assert!(ds.list("t/big/").await.unwrap().items.is_empty());
    // A txn that only checks writes nothing and answers with the current revision.
    let check = ds
        .txn(vec![TxnOp::Check {
            key: "t/x".into(),
            expected_revision: rev,
        }])
        .await
        .unwrap();
    assert!(check >= rev);
    assert_eq!(ds.get("t/x").await.unwrap().unwrap().mod_revision, rev);
}

/// Listings are sorted snapshots; watches replay from a revision (inclusive) in order.
async fn list_and_watch(ds: &dyn Datastore) {
    let r1 = ds.put("l/1", v("1")).await.unwrap();
    let r2 = ds.put("l/2", v("2")).await.unwrap();
    ds.put("lx", v("not under l/")).await.unwrap();
    let r3 = ds.put("l/0", v("0")).await.unwrap();
    let listing = ds.list("l/").await.unwrap();
    let keys: Vec<_> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["l/0", "l/1", "l/2"]);
    assert!(listing.revision >= r3);
    assert!(ds.revision().await.unwrap() >= listing.revision);
    assert!(ds.list("nothing/").await.unwrap().items.is_empty());

    let mut w = ds.watch("l/", r1).await.unwrap();
    for (want, rev) in [("l/1", r1), ("l/2", r2), ("l/0", r3)] {
        let ev = next_event(&mut w).await.unwrap();
        assert_eq!((put_key(&ev).0, ev.revision()), (want, rev));
    }
    // Live events, including a delete and a txn's events sharing one revision in op order.
    ds.delete("l/1", None).await.unwrap();
    let after = ds.revision().await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert!(
        matches!(&ev, WatchEvent::Delete { key, mod_revision } if key == "l/1" && *mod_revision > r3 && *mod_revision <= after),
        "{ev:?}"
    );
    let rt = ds
        .txn(vec![
            TxnOp::Create {
                key: "l/b".into(),
                value: v("b"),
            },
            TxnOp::Create {
                key: "l/a".into(),
                value: v("a"),
            },
        ])
        .await
        .unwrap();
    for want in ["l/b", "l/a"] {
        let ev = next_event(&mut w).await.unwrap();
        assert_eq!((put_key(&ev).0, ev.revision()), (want, rt));
    }
    drop(w);

    // Resume from the middle of the history: starts exactly at the asked revision.
    let mut w = ds.watch("l/", r2).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(
        (put_key(&ev), ev.revision()),
        (("l/2", b"2".as_slice()), r2)
    );
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(ev.revision(), r3);
}

async fn conformance(ds: &dyn Datastore) {
    single_key_ops(ds).await;
    transactions(ds).await;
    list_and_watch(ds).await;
}

#[tokio::test]
async fn etcd_conforms() {
    let ds = EtcdServer::shared().datastore("conformance").await;
    conformance(&ds).await;
}

#[tokio::test]
async fn memory_conforms() {
    conformance(&MemoryDatastore::new()).await;
}

/// Compaction ends a watch with `Compacted`, and a `Watcher` whose resume point was compacted
/// away relists and reports `Resynced` (deletions included).
async fn compaction(
    ds: Arc<dyn Datastore>,
    compact: &(dyn Fn(i64) -> BoxFuture<'static, Result<()>> + Sync),
) {
    let r1 = ds.put("c/k", v("1")).await.unwrap();
    ds.put("c/gone", v("1")).await.unwrap();
    let mut watcher = Watcher::new(ds.clone(), "c/")
        .with_backoff(Duration::from_millis(10), Duration::from_millis(200));
    let synced = next_change(&mut watcher).await;
    assert!(
        matches!(&synced, WatcherEvent::Synced { items, .. } if items.len() == 2),
        "{synced:?}"
    );

    ds.delete("c/gone", None).await.unwrap();
    ds.put("c/k", v("2")).await.unwrap();
    let r3 = ds.put("c/new", v("3")).await.unwrap();
    compact(r3).await.unwrap();

    let mut w = ds.watch("c/", r1).await.unwrap();
    let err = next_event(&mut w).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Compacted { prefix, requested, compact_revision } if prefix == "c/" && *requested == r1 && *compact_revision == r3),
        "{err}"
    );
    assert!(w.next().await.is_none(), "the stream ends after Compacted");

    match next_change(&mut watcher).await {
        WatcherEvent::Resynced { items, revision } => {
            let keys: Vec<_> = items.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(keys, ["c/k", "c/new"]);
            assert!(revision >= r3);
        }
        other => panic!("expected Resynced, got {other:?}"),
    }
    let r4 = ds.put("c/later", v("4")).await.unwrap();
    match next_change(&mut watcher).await {
        WatcherEvent::Changed(ev) => assert_eq!((ev.key(), ev.revision()), ("c/later", r4)),
        other => panic!("expected the next change, got {other:?}"),
    }
}

#[tokio::test]
async fn etcd_compaction_forces_resync() {
    // Own server: compaction is cluster-wide and would break other tests' watches.
    let server = EtcdServer::start();
    let ds = server.datastore("compaction").await;
    let compactor = ds.clone();
    let compact = move |rev| -> BoxFuture<'static, Result<()>> {
        let c = compactor.clone();
        Box::pin(async move { c.compact(rev).await })
    };
    compaction(Arc::new(ds), &compact).await;
}

#[tokio::test]
async fn memory_compaction_forces_resync() {
    let ds = MemoryDatastore::new();
    let mem = ds.clone();
    let compact = move |rev| -> BoxFuture<'static, Result<()>> {
        let r = mem.compact(rev);
        Box::pin(async move { r })
    };
    compaction(Arc::new(ds), &compact).await;
}

fn assert_unavailable(err: &DatastoreError, endpoint: &str) {
    match err {
        DatastoreError::Unavailable { endpoints, .. } => {
            assert!(endpoints.contains(endpoint), "{err}")
        }
        other => panic!("expected Unavailable naming {endpoint}, got {other}"),
    }
}

#[tokio::test]
async fn outage_is_typed_and_recovers() {
    let server = EtcdServer::start();
    let endpoint = server.endpoint();
    let ds: Arc<dyn Datastore> = Arc::new(server.datastore("outage").await);
    let r1 = ds.put("o/before", v("1")).await.unwrap();
    let mut raw = ds.watch("o/", r1 + 1).await.unwrap();
    let mut watcher = Watcher::new(ds.clone(), "o/")
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500));
    assert!(matches!(
        next_change(&mut watcher).await,
        WatcherEvent::Synced { .. }
    ));

    server.stop();
    let started = Instant::now();
    let err = ds.get("o/before").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_unavailable(&err, &endpoint);
    let err = next_event(&mut raw).await.unwrap_err();
    assert_unavailable(&err, &endpoint);
    assert!(
        raw.next().await.is_none(),
        "a broken watch ends after its error"
    );

    server.restart();
    let kv = ds
        .get("o/before")
        .await
        .expect("recovers after restart")
        .unwrap();
    assert_eq!(kv.mod_revision, r1, "data survived the crash (fsync on)");
    let r2 = ds.put("o/after", v("2")).await.unwrap();
    // The watcher resumes from its last revision: the write is its next event, no resync.
    match next_change(&mut watcher).await {
        WatcherEvent::Changed(ev) => assert_eq!((ev.key(), ev.revision()), ("o/after", r2)),
        other => panic!("expected the write made after the restart, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdDatastore::connect(EtcdConfig::new(vec![endpoint.clone()]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_unavailable(&err, &endpoint);
}

#[tokio::test]
async fn prefixes_isolate_datastores() {
    let server = EtcdServer::shared();
    let one = server.datastore("iso-one").await;
    let two = server.datastore("iso-two").await;
    assert_ne!(one.prefix(), two.prefix());
    one.put("k", v("one")).await.unwrap();
    two.create("k", v("two"))
        .await
        .expect("same relative key, other prefix");
    let mut w = one
        .watch("", one.revision().await.unwrap() + 1)
        .await
        .unwrap();
    two.put("k", v("two again")).await.unwrap();
    let mine = one.put("mine", v("1")).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(
        (put_key(&ev).0, ev.revision()),
        ("mine", mine),
        "the other prefix's write is not seen"
    );
    let keys: Vec<_> = one
        .list("")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        keys,
        [("k".to_string(), v("one")), ("mine".to_string(), v("1"))]
    );
}

async fn config_error(config: EtcdConfig) -> String {
    match EtcdDatastore::connect(config).await {
        Err(DatastoreError::Config(msg)) => msg,
        Err(other) => panic!("expected a Config error, got {other}"),
        Ok(ds) => panic!("expected a Config error, connected to {ds:?}"),
    }
}

#[tokio::test]
async fn configuration_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let tls = EtcdTls {
        ca_file: missing.clone(),
        cert_file: None,
        key_file: None,
        domain: None,
    };
    let mut config = EtcdConfig::new(vec!["https://127.0.0.1:2379".into()]);
    config.tls = Some(tls.clone());
    let msg = config_error(config.clone()).await;
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cert = dir.path().join("client.pem");
    config.tls = Some(EtcdTls {
        ca_file: ca,
        cert_file: Some(cert.clone()),
        ..tls
    });
    let msg = config_error(config.clone()).await;
    assert!(
        msg.contains(&cert.display().to_string()) && msg.contains("key"),
        "{msg}"
    );

    let mut config = EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]);
    config.username = Some("agent".into());
    assert!(config_error(config.clone()).await.contains("agent"));
    config.username = None;
    config.prefix = "/trellis/v1".into();
    assert!(config_error(config.clone()).await.contains("/trellis/v1"));
    config.prefix = "/trellis/v1/".into();
    config.endpoints = vec!["http://bad host:1".into()];
    assert!(config_error(config.clone()).await.contains("bad host"));
    config.endpoints.clear();
    assert!(config_error(config).await.contains("no etcd endpoints"));
}

#[tokio::test]
async fn authentication_and_permissions_are_rejected() {
    // Own server: enabling auth changes it for everyone.
    let server = EtcdServer::start();
    let mut admin = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    // "agent" may read its prefix key (the connect probe) and write only under `allowed/`.
    let mut config = server.config("auth");
    let prefix = config.prefix.clone();
    admin.role_add("agent").await.unwrap();
    let allowed = etcd_client::Permission::read_write(format!("{prefix}allowed/")).with_prefix();
    admin.role_grant_permission("agent", allowed).await.unwrap();
    let probe = etcd_client::Permission::read(prefix.clone());
    admin.role_grant_permission("agent", probe).await.unwrap();
    admin.user_add("agent", "agent-pw", None).await.unwrap();
    admin.user_grant_role("agent", "agent").await.unwrap();
    admin.auth_enable().await.unwrap();

    config.username = Some("agent".into());
    config.password = Some("wrong".into());
    let err = EtcdDatastore::connect(config.clone()).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Rejected { op: "authenticate", key, .. } if key == "agent"),
        "{err}"
    );
    config.username = None;
    config.password = None;
    let err = EtcdDatastore::connect(config.clone()).await.unwrap_err();
    assert!(matches!(&err, DatastoreError::Rejected { .. }), "{err}");

    config.username = Some("agent".into());
    config.password = Some("agent-pw".into());
    let ds = EtcdDatastore::connect(config).await.unwrap();
    let rev = ds.create("allowed/k", v("1")).await.unwrap();
    assert_eq!(
        ds.get("allowed/k").await.unwrap().unwrap().mod_revision,
        rev
    );
    let err = ds.put("denied/k", v("1")).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Rejected { op: "put", key, .. } if key == "denied/k"),
        "{err}"
    );
    // A refused watch is a refusal, not an outage to retry forever.
    let mut w = ds.watch("denied/", rev).await.unwrap();
    let err = next_event(&mut w).await.unwrap_err();
    assert!(
        matches!(&err, DatastoreError::Rejected { op: "watch", key, .. } if key == "denied/"),
        "{err}"
    );
}
