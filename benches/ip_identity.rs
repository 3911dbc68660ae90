//! `require_ip_identity` with 100,000 active users: what a request costs when its address
//! is in the directory's local cache (the common case: a lookup, the traffic note for the
//! idle timeout, the variables), beside the floors: the cache lookup alone, a `HashMap`
//! lookup of an address, and a read of the memory store (through a runtime, as the
//! gateway awaits it on a cache miss). Before the runs it prints the memory one entry takes
//! in the directory's cache and in the memory store, measured as the growth of the
//! process's resident memory while each is filled (Linux).
//!
//! `cargo bench -p portcullis-benches --bench ip_identity`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::identity::directory::StoreIdentityDirectory;
use portcullis::store::{now_secs, IdentityEntry, StateStore};
use portcullis_assertions::ip_identity::{IdentityDirectory, IpIdentityVars, RequireIpIdentity};
use portcullis_assertions::{Assertion, Exchange, Request, VarRegistry};

/// The process's resident memory, bytes (`VmRSS` of /proc/self/status): what filling a
/// table grows it by is what the table takes (allocator overhead included).
fn resident() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

const USERS: u32 = 100_000;

/// User `i`: 10.x.y.z, a name, two groups and an interface, as a DHCP server registers them.
fn entry(i: u32, now: i64) -> IdentityEntry {
    IdentityEntry {
        ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
        username: format!("traveller{i:06}"),
        groups: vec!["guests".to_owned(), "wifi".to_owned()],
        interface: Some("wifi".to_owned()),
        session_timeout_secs: Some(86_400),
        idle_timeout_secs: Some(3600),
        expires_at: now + 3600,
        session_ends_at: now + 86_400,
    }
}

fn bench(c: &mut Criterion) {
    let now = now_secs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = StateStore::memory();
    let entries: Vec<IdentityEntry> = (0..USERS).map(|i| entry(i, now)).collect();

    let before = resident();
    for e in &entries {
        runtime
            .block_on(store.identities().put_identity(e))
            .expect("put");
    }
    let in_store = resident() - before;

    let directory = StoreIdentityDirectory::new(store.identities().clone());
    let before = resident();
    for e in &entries {
        directory.remember(e.ip, Some(e));
    }
    let in_cache = resident() - before;
    println!(
        "ip_identity memory, {USERS} users (username 17 bytes, 2 groups, an interface): \
         directory cache {} bytes per entry, memory store {} bytes per entry",
        in_cache / isize::try_from(USERS).unwrap_or(1),
        in_store / isize::try_from(USERS).unwrap_or(1),
    );

    let mut registry = VarRegistry::new();
    let vars = IpIdentityVars {
        user: registry.define("identity.user"),
        groups: registry.define("identity.groups"),
        interface: registry.define("identity.interface"),
    };
    let directory = Arc::new(directory);
    let step = RequireIpIdentity::new(
        vec!["wifi".to_owned()],
        vec!["wifi".to_owned()],
        directory.clone(),
        vars,
    );
    let ip = entries[54_321].ip;
    let mut parts = http::Request::new(()).into_parts().0;
    let mut group = c.benchmark_group("ip_identity");
    group.bench_function("require_ip_identity (cached, 100k users)", |b| {
        directory.remember(ip, Some(&entries[54_321]));
        b.iter(|| {
            let mut x = Exchange::new(registry.len(), ip, ip);
            let mut req = Request {
                head: &mut parts,
                body: None,
            };
            // Once a second the cached answer is due for a store read: refreshed here (as
            // the read would) so every iteration measures the cached path.
            if step.awaits(&req, &mut x).is_some() {
                directory.remember(ip, Some(&entries[54_321]));
            }
            let verdict = step.on_request(&mut req, &mut x);
            assert!(verdict.is_continue());
            black_box(verdict)
        });
    });
    group.bench_function("floor: directory cache lookup (100k users)", |b| {
        directory.remember(ip, Some(&entries[54_321]));
        b.iter(|| {
            let found = directory.cached(black_box(ip));
            if found.is_none() {
                directory.remember(ip, Some(&entries[54_321]));
            }
            black_box(found)
        });
    });
    let plain: HashMap<IpAddr, u32> = entries.iter().zip(0..).map(|(e, i)| (e.ip, i)).collect();
    group.bench_function("floor: HashMap<IpAddr, _> lookup (100k)", |b| {
        b.iter(|| black_box(plain.get(&black_box(ip))));
    });
    group.bench_function("memory store read (100k users, via a runtime)", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(store.identities().identity(black_box(ip), now))
                    .expect("read"),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
