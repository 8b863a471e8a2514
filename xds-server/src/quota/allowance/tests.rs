use super::*;
use crate::quota::{
    decide::plan,
    settings::QuotaSettings,
    testing::{decision_time, descriptor, quotas},
};

const QUOTAS: &str = "
quotas:
  failure_mode: open
  allowances: {share: 0.0625, lifetime_ms: 1000}
  descriptors:
    - key: tenant
      rate_limit: {unit: minute, requests_per_unit: 1000}
      descriptors:
        - key: tokens
          value: total
          rate_limit: {unit: month, requests_per_unit: 1000000}
    - key: tenant
      value: vip
      unlimited: true
    - key: tier
      value: trial
      shadow_mode: true
      rate_limit: {unit: hour, requests_per_unit: 100}
    - key: model
      rate_limit: {unit: second, requests_per_unit: 1000}
";

fn settings() -> QuotaSettings {
    quotas(QUOTAS).0
}

fn allowances() -> AllowanceSettings {
    settings().allowances.unwrap()
}

fn now() -> SystemTime {
    decision_time()
}

fn now_seconds() -> i64 {
    crate::util::unix_seconds(now())
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors,
        hits_addend: 0,
    }
}

fn sent(entries: &[(&str, &str)]) -> Vec<DescriptorEntry> {
    entries
        .iter()
        .map(|(key, value)| DescriptorEntry {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// The grants for `request` when admitted with these counts after its admission.
fn granted(request: &RateLimitRequest, counts: Vec<u64>) -> Vec<Grant> {
    let planned = plan(&settings(), request, now_seconds()).unwrap();
    let admission = Admission {
        admitted: true,
        counts,
    };
    grants(&allowances(), request, &planned, &admission, now())
}

/// `(units, valid_for_ms)` of each grant.
fn units(grants: &[Grant]) -> Vec<(u64, u32)> {
    grants
        .iter()
        .map(|g| (g.allowance.units, g.allowance.valid_for_ms))
        .collect()
}

#[test]
fn descriptors_that_count_nothing_get_uncounted_allowances() {
    let asked = request(vec![
        descriptor(&[("tenant", "vip")], Some(1), false),
        descriptor(&[("region", "x")], Some(1), false),
    ]);
    let grants = granted(&asked, vec![]);
    assert_eq!(
        grants,
        vec![
            Grant {
                allowance: Allowance {
                    entries: sent(&[("tenant", "vip")]),
                    uncounted: true,
                    units: 0,
                    window: String::new(),
                    valid_for_ms: 1000,
                },
                charge: None,
            },
            Grant {
                allowance: Allowance {
                    entries: sent(&[("region", "x")]),
                    uncounted: true,
                    units: 0,
                    window: String::new(),
                    valid_for_ms: 1000,
                },
                charge: None,
            },
        ]
    );
    assert!(grants.iter().all(|g| !g.is_counted()));
}

#[test]
fn a_counted_limit_grants_a_share_of_what_remains_after_the_request() {
    let minute_start = now_seconds() - 30;
    let asked = request(vec![
        descriptor(&[("tenant", "a")], Some(1), false),
        descriptor(&[("tenant", "a"), ("tokens", "total")], Some(250), false),
        descriptor(&[("model", "US.Anthropic.Claude-3-Haiku")], Some(1), false),
    ]);
    let grants = granted(&asked, vec![1, 250, 1]);
    assert_eq!(
        grants[0],
        Grant {
            allowance: Allowance {
                entries: sent(&[("tenant", "a")]),
                uncounted: false,
                // (1000 - 1) / 16, rounded down.
                units: 62,
                window: format!("minute/{minute_start}"),
                valid_for_ms: 1000,
            },
            charge: Some(Charge {
                key: format!("bedrock-gateway:bedrock-gateway|tenant=a|minute|{minute_start}"),
                hits: 62,
                limit: Some(1000),
                expire_at: minute_start + 60,
            }),
        }
    );
    assert_eq!(grants[1].allowance.units, 62_484);
    assert_eq!(grants[1].allowance.window, "month/1769904000");
    assert_eq!(
        grants[1].charge.as_ref().map(|c| (c.hits, c.limit)),
        Some((62_484, Some(1_000_000)))
    );
    // Entries as sent (the counter is the model key's); valid until the second ends.
    assert_eq!(
        grants[2].allowance.entries,
        sent(&[("model", "US.Anthropic.Claude-3-Haiku")])
    );
    assert_eq!(
        grants[2].charge.as_ref().map(|c| c.key.as_str()),
        Some(
            format!(
                "bedrock-gateway:bedrock-gateway|model=anthropic.claude-3-haiku|second|{}",
                now_seconds()
            )
            .as_str()
        )
    );
    assert_eq!(units(&grants), [(62, 1000), (62_484, 1000), (62, 750)]);
}

#[test]
fn no_grant_when_the_share_is_less_than_twice_the_charge() {
    let tenant = |count: u64| {
        granted(
            &request(vec![descriptor(&[("tenant", "a")], Some(1), false)]),
            vec![count],
        )
    };
    // 32 left: 2 units, twice the request's hit.
    assert_eq!(units(&tenant(968)), [(2, 1000)]);
    // 31 left: 1 unit, not worth it; near the limit every request is decided by the service.
    assert_eq!(units(&tenant(969)), []);
    assert_eq!(units(&tenant(1000)), []);
    let tokens = |hits: u64| {
        granted(
            &request(vec![descriptor(
                &[("tenant", "a"), ("tokens", "total")],
                Some(hits),
                false,
            )]),
            vec![hits],
        )
    };
    // 970000 left: 60625 units, at least twice 30000.
    assert_eq!(units(&tokens(30_000)), [(60_625, 1000)]);
    // 969000 left: 60562 units, less than twice 31000.
    assert_eq!(units(&tokens(31_000)), []);
}

#[test]
fn a_refill_charges_nothing_and_is_granted_from_one_unit() {
    let refill = |count: u64| {
        granted(
            &request(vec![
                descriptor(&[("tenant", "a")], Some(0), false),
                descriptor(&[("tenant", "vip")], Some(0), false),
            ]),
            vec![count],
        )
    };
    assert_eq!(units(&refill(0)), [(62, 1000), (0, 1000)]);
    assert_eq!(units(&refill(984)), [(1, 1000), (0, 1000)]);
    // 15 left: nothing counted to grant; the uncounted one all the same.
    let near = refill(985);
    assert_eq!(units(&near), [(0, 1000)]);
    assert!(near[0].allowance.uncounted);
}

#[test]
fn shadow_limits_refunds_and_refused_decisions_get_none() {
    let asked = request(vec![
        descriptor(&[("tier", "trial")], Some(1), false),
        descriptor(&[("tenant", "a"), ("tokens", "total")], Some(40), true),
    ]);
    assert_eq!(granted(&asked, vec![1]), []);

    let asked = request(vec![
        descriptor(&[("tenant", "a")], Some(1), false),
        descriptor(&[("tenant", "vip")], Some(1), false),
    ]);
    let planned = plan(&settings(), &asked, now_seconds()).unwrap();
    let refused = Admission {
        admitted: false,
        counts: vec![1000],
    };
    assert_eq!(grants(&allowances(), &asked, &planned, &refused, now()), []);
}

#[test]
fn a_descriptor_sent_twice_gets_one_allowance_from_its_counter() {
    let asked = request(vec![
        descriptor(&[("tenant", "a")], Some(3), false),
        descriptor(&[("tenant", "a")], Some(3), false),
    ]);
    // The counter after both: 6; the request charged it 6, so 12 units are the least.
    let grants = granted(&asked, vec![3, 6]);
    assert_eq!(units(&grants), [(62, 1000)]);
    let crowded = granted(&asked, vec![803, 806]);
    // 194 left: 12 units, exactly twice the charge.
    assert_eq!(units(&crowded), [(12, 1000)]);
    // 191 left: 11 units.
    assert_eq!(units(&granted(&asked, vec![806, 809])), []);
}

#[test]
fn shares_round_down_and_never_overflow() {
    assert_eq!(share(999, 62_500), 62);
    assert_eq!(share(15, 62_500), 0);
    assert_eq!(share(1, 500_000), 0);
    assert_eq!(share(3, 500_000), 1);
    assert_eq!(share(u64::MAX, 500_000), u64::MAX / 2);
    assert_eq!(share(0, 500_000), 0);
}
