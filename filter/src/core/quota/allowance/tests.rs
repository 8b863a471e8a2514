use super::*;

fn entries(pairs: &[(&str, &str)]) -> Vec<Entry> {
    pairs
        .iter()
        .map(|(k, v)| Entry {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

fn reservation(pairs: &[(&str, &str)], reserved: u64) -> Reservation {
    Reservation {
        entries: entries(pairs),
        kind: None,
        reserved,
        window: None,
    }
}

fn allowance(pairs: &[(&str, &str)], units: u64, window: &str, valid_for_ms: u32) -> Allowance {
    Allowance {
        entries: pairs
            .iter()
            .map(|(k, v)| DescriptorEntry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        uncounted: false,
        units,
        window: window.into(),
        valid_for_ms,
    }
}

const TENANT: &[(&str, &str)] = &[("tenant", "a")];
const TOKENS: &[(&str, &str)] = &[("tenant", "a"), ("tokens", "total")];

#[test]
fn a_request_is_admitted_here_only_when_every_descriptor_is_covered() {
    let mut allowances = Allowances::default();
    let mut request = vec![reservation(TENANT, 1), reservation(TOKENS, 100)];
    assert_eq!(allowances.spend(&mut request, 0), None, "nothing held");
    assert!(
        allowances
            .grant(&[allowance(TENANT, 10, "minute/60", 1000)], 0)
            .is_empty()
    );
    assert_eq!(
        allowances.spend(&mut request, 1),
        None,
        "tokens not covered"
    );
    allowances.grant(&[allowance(TOKENS, 150, "month/0", 1000)], 1);
    // 50 of 150 tokens left: less than half, time for a refill.
    assert_eq!(
        allowances.spend(&mut request, 2),
        Some(Spent { refill: true })
    );
    assert_eq!(request[0].window.as_deref(), Some("minute/60"));
    assert_eq!(request[1].window.as_deref(), Some("month/0"));
    // 50 tokens left: the next request of 100 is not covered, and spends nothing.
    let mut next = vec![reservation(TENANT, 1), reservation(TOKENS, 100)];
    assert_eq!(allowances.spend(&mut next, 3), None);
    assert_eq!(next[0].window, None);
    // What is left goes back on expiry: 9 hits and 50 tokens.
    let mut back = allowances.expire(1001);
    back.sort_by_key(|a| a.delta);
    let deltas: Vec<(i64, &str)> = back.iter().map(|a| (a.delta, a.window.as_str())).collect();
    assert_eq!(deltas, [(-50, "month/0"), (-9, "minute/60")]);
    assert!(allowances.is_empty());
}

#[test]
fn an_expired_allowance_is_not_spent() {
    let mut allowances = Allowances::default();
    allowances.grant(&[allowance(TENANT, 10, "minute/60", 100)], 0);
    let mut request = vec![reservation(TENANT, 1)];
    assert!(allowances.spend(&mut request, 99).is_some());
    assert_eq!(allowances.spend(&mut request, 100), None);
}

#[test]
fn a_descriptor_sent_twice_must_be_covered_twice() {
    let mut allowances = Allowances::default();
    allowances.grant(&[allowance(TENANT, 3, "minute/60", 100)], 0);
    let mut request = vec![reservation(TENANT, 2), reservation(TENANT, 2)];
    assert_eq!(allowances.spend(&mut request, 1), None);
    let back = allowances.drain();
    assert_eq!(back[0].delta, -3, "nothing was spent");
}

#[test]
fn running_low_asks_for_a_refill_and_a_grant_adds_up() {
    let mut allowances = Allowances::default();
    allowances.grant(&[allowance(TENANT, 4, "minute/60", 1000)], 0);
    let mut request = vec![reservation(TENANT, 1)];
    assert_eq!(
        allowances.spend(&mut request, 1),
        Some(Spent { refill: false })
    );
    assert_eq!(
        allowances.spend(&mut request, 1),
        Some(Spent { refill: false })
    );
    assert_eq!(
        allowances.spend(&mut request, 1),
        Some(Spent { refill: true })
    );
    allowances.grant(&[allowance(TENANT, 4, "minute/60", 1000)], 2);
    // 1 + 4 left.
    for _ in 0..5 {
        assert!(allowances.spend(&mut request, 3).is_some());
    }
    assert_eq!(allowances.spend(&mut request, 3), None);
    assert!(allowances.drain().is_empty(), "nothing left to give back");
}

#[test]
fn a_grant_in_another_window_gives_the_old_one_back() {
    let mut allowances = Allowances::default();
    allowances.grant(&[allowance(TENANT, 5, "second/1", 1000)], 0);
    let back = allowances.grant(&[allowance(TENANT, 7, "second/2", 1000)], 10);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].delta, back[0].window.as_str()), (-5, "second/1"));
    let mut request = vec![reservation(TENANT, 7)];
    assert!(allowances.spend(&mut request, 11).is_some());
    assert_eq!(request[0].window.as_deref(), Some("second/2"));
}

#[test]
fn uncounted_descriptors_are_spent_freely_and_given_back_as_nothing() {
    let mut allowances = Allowances::default();
    let mut free = allowance(TENANT, 0, "", 100);
    free.uncounted = true;
    allowances.grant(&[free], 0);
    let mut request = vec![reservation(TENANT, 1_000_000)];
    assert!(allowances.spend(&mut request, 1).is_some());
    assert_eq!(request[0].window, None);
    assert!(allowances.expire(100).is_empty());
}

#[test]
fn entries_cannot_be_spelled_to_meet_another_descriptor() {
    let mut allowances = Allowances::default();
    allowances.grant(
        &[allowance(
            &[("tenant", "a"), ("b", "c")],
            5,
            "minute/60",
            100,
        )],
        0,
    );
    let mut request = vec![reservation(&[("tenant", "ab"), ("", "c")], 1)];
    assert_eq!(allowances.spend(&mut request, 1), None);
    let mut request = vec![reservation(&[("tenant", "a:b"), ("", "c")], 1)];
    assert_eq!(allowances.spend(&mut request, 1), None);
}

#[test]
fn one_ask_per_set_of_descriptors_is_in_flight() {
    let mut allowances = Allowances::default();
    let request = vec![reservation(TENANT, 1)];
    let other = vec![reservation(TOKENS, 1)];
    assert!(allowances.ask(&request, 0, 200));
    assert!(!allowances.ask(&request, 100, 200));
    assert!(allowances.ask(&other, 100, 200));
    assert!(
        allowances.ask(&request, 200, 200),
        "the first ask timed out"
    );
    allowances.grant(&[allowance(TENANT, 5, "minute/60", 100)], 201);
    assert!(allowances.ask(&other, 202, 200), "a grant ends the asks");
}

#[test]
fn the_number_held_is_bounded_and_the_first_to_expire_goes_back() {
    let mut allowances = Allowances::default();
    for i in 0..MAX_HELD {
        let tenant = i.to_string();
        let valid_for = 1000 + u32::try_from(i).unwrap();
        allowances.grant(
            &[allowance(&[("tenant", &tenant)], 3, "minute/60", valid_for)],
            0,
        );
    }
    assert_eq!(allowances.len(), MAX_HELD);
    let back = allowances.grant(&[allowance(&[("tenant", "new")], 3, "minute/60", 5000)], 1);
    assert_eq!(allowances.len(), MAX_HELD);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].entries[0].value, "0", "the one expiring first");
}

#[test]
fn a_pre_check_needs_something_left() {
    let mut allowances = Allowances::default();
    allowances.grant(&[allowance(TOKENS, 2, "month/0", 1000)], 0);
    let mut check = vec![reservation(TOKENS, 0)];
    assert!(allowances.spend(&mut check, 1).is_some());
    let mut request = vec![reservation(TOKENS, 2)];
    assert!(allowances.spend(&mut request, 1).is_some());
    assert_eq!(allowances.spend(&mut check, 1), None, "all of it spent");
}
