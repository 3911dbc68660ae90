//! The SQLite store against every conformance suite, plus what only a file can show:
//! durability across a reopen, WAL mode, and the read-only check of `check --connect`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::db::lock;
use super::*;
use crate::store::conformance;
use crate::store::StateStore;

/// Fresh stores, each in its own file under one temporary directory.
struct Files {
    dir: tempfile::TempDir,
    opened: AtomicUsize,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
            opened: AtomicUsize::new(0),
        }
    }

    fn fresh(&self) -> Arc<SqliteStore> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        Arc::new(SqliteStore::open(&self.dir.path().join(format!("s{n}.db"))).expect("open"))
    }

    fn state(&self) -> StateStore {
        StateStore::from_backend(self.fresh(), "sqlite test")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_token_suite() {
    let files = Files::new();
    conformance::tokens::run_all(&|| files.state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_revocation_suite() {
    let files = Files::new();
    conformance::revocations::run_all(&|| files.state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_once_suite() {
    let files = Files::new();
    conformance::once::run_all(&|| files.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_counter_suite() {
    let files = Files::new();
    conformance::counters::run_all(&|| files.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_identity_suite() {
    let files = Files::new();
    conformance::identities::run_all(&|| files.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_document_suite() {
    let files = Files::new();
    conformance::documents::run_all(&|| files.fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_committed_is_there_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let open = || StateStore::from_backend(Arc::new(SqliteStore::open(&path).expect("open")), "");
    {
        let store = open();
        conformance::tokens::seed_for_reopen(&store).await;
        store
            .counters()
            .charge("kept", 3, 10, 160, 100)
            .await
            .expect("charge");
    }
    let store = open();
    conformance::tokens::check_after_reopen(&store).await;
    assert!(store.revocations().revocation_epoch().await.expect("epoch") > 0);
    assert_eq!(
        store
            .counters()
            .charge("kept", 1, 10, 160, 101)
            .await
            .expect("charge")
            .window
            .count,
        4
    );
}

#[test]
fn wal_mode_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("w.db")).expect("open");
    let mode: String = lock(&store.db.writer)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[test]
fn the_read_only_check_accepts_a_store_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).expect("open"));
    let before = std::fs::read(&path).expect("read");
    let summary = verify_read_only(&path).expect("verify");
    assert!(summary.contains("schema ok"), "{summary}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn the_read_only_check_refuses_a_missing_file_without_creating_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.db");
    let err = verify_read_only(&path).expect_err("missing");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!path.exists());
}

#[test]
fn the_read_only_check_refuses_what_is_not_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.db");
    std::fs::write(&text, vec![b'x'; 4096]).expect("write");
    let err = verify_read_only(&text).expect_err("not a database");
    assert!(err.to_string().contains("not a SQLite database"), "{err}");

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .and_then(|c| c.execute_batch("CREATE TABLE things (id INTEGER);"))
        .expect("other schema");
    let err = verify_read_only(&other).expect_err("foreign database");
    assert!(err.to_string().contains("no tokens table"), "{err}");

    let old = dir.path().join("old.db");
    Connection::open(&old)
        .and_then(|c| c.execute_batch("CREATE TABLE tokens (id TEXT PRIMARY KEY, kind TEXT);"))
        .expect("old schema");
    let err = verify_read_only(&old).expect_err("wrong columns");
    assert!(err.to_string().contains("has no column"), "{err}");
}

/// A write that waits on the disk (here: on the writer connection, held by another thread)
/// must not stall the runtime: on a single-threaded runtime, a timer still fires on time.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_write_does_not_stall_the_runtime() {
    let files = Files::new();
    let store = files.fresh();
    let db = Arc::clone(&store.db);
    let (locked_sender, locked) = std::sync::mpsc::channel();
    let (release, release_receiver) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _writer = lock(&db.writer);
        locked_sender.send(()).expect("send");
        // Released by the test, or after a while if a blocking store stalled the test.
        let _ = release_receiver.recv_timeout(std::time::Duration::from_secs(3));
    });
    locked.recv().expect("writer held");
    let write = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.use_once("slow", 100, 0).await }
    });
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the runtime stalled for {:?} behind a store write",
        started.elapsed()
    );
    assert!(
        !write.is_finished(),
        "the write is still waiting for the writer"
    );
    release.send(()).expect("release");
    assert!(write.await.expect("task").expect("once"));
    holder.join().expect("holder");
}

/// A file made before identities had a session end gets the column on open; its rows keep
/// their expiry as their session's end, and touches work on them.
#[tokio::test]
async fn an_identity_table_without_a_session_end_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old-identities.db");
    Connection::open(&path)
        .and_then(|c| {
            c.execute_batch(
                "CREATE TABLE identities (ip TEXT PRIMARY KEY, username TEXT NOT NULL,
                   groups TEXT NOT NULL, interface TEXT, session_timeout_secs INTEGER,
                   idle_timeout_secs INTEGER, expires_at INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO identities VALUES ('10.0.0.1', 'old', 'a\nb', NULL, 100, 10, 2000);",
            )
        })
        .expect("old schema");
    let store = SqliteStore::open(&path).expect("migrated");
    let ip: IpAddr = "10.0.0.1".parse().expect("ip");
    let entry = store.identity(ip, 1000).await.expect("read").expect("live");
    assert_eq!((entry.expires_at, entry.session_ends_at), (2000, 2000));
    assert_eq!(entry.groups, ["a", "b"]);
    let moved = store
        .touch_identities(&[crate::store::IdentityTouch {
            ip,
            username: "old".to_owned(),
            seen_at: 1995,
        }])
        .await
        .expect("touch");
    assert_eq!(moved, 0, "the session's end caps it: already there");
    assert!(
        verify_read_only(&path).is_ok(),
        "the migrated file is this version's"
    );
}
