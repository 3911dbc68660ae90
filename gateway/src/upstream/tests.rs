use super::*;
use http::HeaderValue;
use proptest::prelude::*;

fn target(port: u16, weight: u32) -> Arc<Target> {
    Arc::new(Target::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        weight,
        HeaderValue::from_static("backend"),
        String::new(),
    ))
}

fn pool(balance: Balance, weights: &[u32], max_connections: Option<u32>) -> Pool {
    let targets = weights
        .iter()
        .enumerate()
        .map(|(index, weight)| target(9000 + u16::try_from(index).expect("few"), *weight))
        .collect();
    Pool::new(
        PoolSettings {
            balance,
            max_connections,
            passive: Passive::default(),
            health_check: None,
            resolve: None,
        },
        RetryPolicy::default(),
        targets,
    )
}

fn chosen(choice: Choice) -> Lease {
    match choice {
        Choice::Chosen(lease) => lease,
        other => panic!("expected a target, got {other:?}"),
    }
}

#[test]
fn smooth_round_robin_interleaves() {
    let p = pool(Balance::RoundRobin, &[5, 1, 1], None);
    let order: Vec<usize> = (0..7).map(|_| chosen(p.choose(None, 0)).index).collect();
    assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
}

proptest! {
    #[test]
    fn round_robin_serves_each_target_its_weight_per_cycle(weights in prop::collection::vec(1u32..=MAX_WEIGHT, 1..12)) {
        let p = pool(Balance::RoundRobin, &weights, None);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total {
            counts[chosen(p.choose(None, 0)).index] += 1;
        }
        prop_assert_eq!(counts, weights);
    }

    #[test]
    fn a_choice_is_never_tried_unavailable_or_full(
        weights in prop::collection::vec(1u32..=4, 1..10),
        tried in any::<u64>(),
        down in any::<u64>(),
        balance in 0u8..3,
        key in any::<u32>(),
    ) {
        let template = Template::parse("k", &portcullis_assertions::VarRegistry::default()).expect("constant");
        let balance = match balance {
            0 => Balance::RoundRobin,
            1 => Balance::LeastConnections,
            _ => Balance::ConsistentHash(template),
        };
        let p = pool(balance, &weights, Some(1));
        let members = p.members();
        for (index, t) in members.targets.iter().enumerate() {
            if down & (1 << index) != 0 {
                t.record_check(false, (1, 1));
            }
        }
        let key = key.to_le_bytes();
        let mut held = Vec::new();
        loop {
            match p.choose(Some(&key), tried) {
                Choice::Chosen(lease) => {
                    prop_assert_eq!(tried & (1 << lease.index), 0);
                    prop_assert_eq!(down & (1 << lease.index), 0);
                    prop_assert!(held.iter().all(|l: &Lease| l.index != lease.index));
                    held.push(lease);
                }
                Choice::AllBusy => {
                    // Every available target is tried or held.
                    for index in 0..weights.len() {
                        if down & (1 << index) == 0 && tried & (1 << index) == 0 {
                            prop_assert!(held.iter().any(|l| l.index == index));
                        }
                    }
                    break;
                }
                Choice::NoHealthy => {
                    prop_assert!((0..weights.len()).all(|index| down & (1 << index) != 0));
                    prop_assert!(held.is_empty());
                    break;
                }
            }
        }
    }
}

#[test]
fn least_connections_prefers_the_idle_target() {
    let p = pool(Balance::LeastConnections, &[1, 1, 1], None);
    let first = chosen(p.choose(None, 0));
    let second = chosen(p.choose(None, 0));
    let third = chosen(p.choose(None, 0));
    let mut indices = [first.index, second.index, third.index];
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);
    drop(second);
    let freed = [first.index, third.index];
    let next = chosen(p.choose(None, 0));
    assert!(
        !freed.contains(&next.index),
        "the freed target is the least loaded"
    );
}

#[test]
fn consistent_hash_keeps_a_key_on_its_target_and_moves_only_that_targets_keys() {
    let template =
        Template::parse("k", &portcullis_assertions::VarRegistry::default()).expect("constant");
    let p = pool(Balance::ConsistentHash(template), &[1, 1, 1, 1], None);
    let before: Vec<usize> = (0..400u32)
        .map(|key| chosen(p.choose(Some(&key.to_le_bytes()), 0)).index)
        .collect();
    let again: Vec<usize> = (0..400u32)
        .map(|key| chosen(p.choose(Some(&key.to_le_bytes()), 0)).index)
        .collect();
    assert_eq!(before, again);
    for index in 0..4 {
        let share = before.iter().filter(|i| **i == index).count();
        assert!(
            (50..=150).contains(&share),
            "target {index} took {share} of 400 keys"
        );
    }
    // Target 2 goes down: only its keys move.
    p.members().targets[2].record_check(false, (1, 1));
    for (key, was) in (0..400u32).zip(&before) {
        let now = chosen(p.choose(Some(&key.to_le_bytes()), 0)).index;
        if *was == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(now, *was, "key {key} moved though its target is up");
        }
    }
}

#[test]
fn no_available_target_and_full_targets_are_told_apart() {
    let p = pool(Balance::RoundRobin, &[1, 1], Some(1));
    let a = chosen(p.choose(None, 0));
    let b = chosen(p.choose(None, 0));
    assert!(matches!(p.choose(None, 0), Choice::AllBusy));
    drop((a, b));
    for t in p.members().targets.iter() {
        t.record_check(false, (1, 1));
    }
    assert!(matches!(p.choose(None, 0), Choice::NoHealthy));
    assert!(!p.any_available());
}

#[test]
fn a_re_resolution_keeps_the_state_of_addresses_that_stay() {
    let p = pool(Balance::RoundRobin, &[1, 1], None);
    let kept = p.members().targets[1].clone();
    kept.record_check(false, (1, 1));
    let changed = p.replace_addresses(
        vec![kept.addr, SocketAddr::from(([127, 0, 0, 2], 9000))],
        |addr| Target::new(addr, 1, HeaderValue::from_static("backend"), String::new()),
    );
    assert!(changed);
    let members = p.members();
    assert_eq!(members.targets.len(), 2);
    assert!(members.targets.iter().any(|t| Arc::ptr_eq(t, &kept)));
    assert!(!p.replace_addresses(
        vec![SocketAddr::from(([127, 0, 0, 2], 9000)), kept.addr],
        |addr| Target::new(addr, 1, HeaderValue::from_static("backend"), String::new()),
    ));
}

#[test]
fn least_connections_shares_idle_targets_by_weight() {
    let p = pool(Balance::LeastConnections, &[1, 3], None);
    let mut counts = [0; 2];
    for _ in 0..400 {
        counts[chosen(p.choose(None, 0)).index] += 1;
    }
    assert_eq!(counts, [100, 300]);
}
