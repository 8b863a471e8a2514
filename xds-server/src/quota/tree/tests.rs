use super::*;

fn rate(unit: Unit, requests_per_unit: u64) -> Option<Limit> {
    Some(Limit::Rate(RateLimit {
        unit,
        requests_per_unit,
        name: None,
        shadow_mode: false,
    }))
}

fn node(limit: Option<Limit>, children: Vec<(&str, Option<&str>, Node)>) -> Node {
    let mut descriptors = Descriptors::default();
    for (key, value, child) in children {
        descriptors.insert(key, value, child).unwrap();
    }
    Node { limit, descriptors }
}

/// The brief's example, plus an unlimited tenant, a shadow limit and a node without limit.
fn example() -> Descriptors {
    let shadow = Some(Limit::Rate(RateLimit {
        unit: Unit::Hour,
        requests_per_unit: 5,
        name: Some("trial".into()),
        shadow_mode: true,
    }));
    node(
        None,
        vec![
            (
                "tenant",
                None,
                node(
                    rate(Unit::Minute, 60),
                    vec![
                        ("model", None, node(rate(Unit::Minute, 20), vec![])),
                        (
                            "tokens",
                            Some("total"),
                            node(rate(Unit::Month, 1_000_000), vec![]),
                        ),
                    ],
                ),
            ),
            (
                "tenant",
                Some("team-a"),
                node(
                    rate(Unit::Minute, 600),
                    vec![(
                        "tokens",
                        Some("output"),
                        node(rate(Unit::Minute, 100_000), vec![]),
                    )],
                ),
            ),
            (
                "tenant",
                Some("admins"),
                node(Some(Limit::Unlimited), vec![]),
            ),
            ("tier", Some("trial"), node(shadow, vec![])),
            (
                "service",
                None,
                node(
                    None,
                    vec![(
                        "operation",
                        Some("Converse"),
                        node(rate(Unit::Day, 7), vec![]),
                    )],
                ),
            ),
        ],
    )
    .descriptors
}

fn per_unit(limit: Option<&Limit>) -> Option<(Unit, u64)> {
    match limit {
        Some(Limit::Rate(rate)) => Some((rate.unit, rate.requests_per_unit)),
        _ => None,
    }
}

#[test]
fn matching() {
    let tree = example();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<(Unit, u64)>);
    let cases: &[Case] = &[
        (
            "any tenant: the default",
            &[("tenant", "team-b")],
            Some((Unit::Minute, 60)),
        ),
        (
            "key and value before key alone",
            &[("tenant", "team-a")],
            Some((Unit::Minute, 600)),
        ),
        (
            "the deepest node applies",
            &[("tenant", "team-b"), ("model", "m")],
            Some((Unit::Minute, 20)),
        ),
        (
            "token budget under the default",
            &[("tenant", "team-b"), ("tokens", "total")],
            Some((Unit::Month, 1_000_000)),
        ),
        (
            "team-a's own children replace the default's: no model limit for it",
            &[("tenant", "team-a"), ("model", "m")],
            None,
        ),
        (
            "team-a's output tokens",
            &[("tenant", "team-a"), ("tokens", "output")],
            Some((Unit::Minute, 100_000)),
        ),
        (
            "a kind with no node",
            &[("tenant", "team-b"), ("tokens", "input")],
            None,
        ),
        (
            "walk stops early: more entries than the tree is deep",
            &[("tenant", "team-b"), ("model", "m"), ("operation", "x")],
            None,
        ),
        ("unknown key", &[("region", "x")], None),
        ("no entries", &[], None),
        (
            "a node without limit, reached",
            &[("service", "bedrock-runtime")],
            None,
        ),
        (
            "below a node without limit",
            &[("service", "bedrock-runtime"), ("operation", "Converse")],
            Some((Unit::Day, 7)),
        ),
        (
            "value mismatch and no default",
            &[("service", "bedrock-runtime"), ("operation", "Retrieve")],
            None,
        ),
        (
            "an entry in the wrong order",
            &[("model", "m"), ("tenant", "team-b")],
            None,
        ),
    ];
    for (what, entries, expected) in cases {
        assert_eq!(per_unit(tree.find(entries)), *expected, "{what}");
    }
}

#[test]
fn unlimited_and_shadow_nodes_are_found_as_such() {
    let tree = example();
    assert_eq!(tree.find(&[("tenant", "admins")]), Some(&Limit::Unlimited));
    // Unlimited has no children: the default's children do not apply either.
    assert_eq!(tree.find(&[("tenant", "admins"), ("model", "m")]), None);
    let Some(Limit::Rate(shadow)) = tree.find(&[("tier", "trial")]) else {
        panic!("shadow limit");
    };
    assert!(shadow.shadow_mode);
    assert_eq!(shadow.name.as_deref(), Some("trial"));
    assert_eq!(tree.find(&[("tier", "gold")]), None);
}

#[test]
fn duplicate_siblings_are_refused() {
    let mut tree = Descriptors::default();
    assert!(tree.insert("tenant", Some("a"), Node::default()).is_ok());
    assert!(tree.insert("tenant", Some("a"), Node::default()).is_err());
    assert!(tree.insert("tenant", None, Node::default()).is_ok());
    assert!(tree.insert("tenant", None, Node::default()).is_err());
    assert!(tree.insert("model", Some("a"), Node::default()).is_ok());
}

#[test]
fn shapes_are_the_distinct_limited_paths() {
    use ContextKey::*;
    let shapes = example().shapes();
    assert_eq!(
        shapes.request_descriptors,
        vec![
            vec![Service, Operation],
            vec![Tenant],
            vec![Tenant, Model],
            vec![Tier]
        ]
    );
    assert_eq!(
        shapes.token_descriptors,
        vec![
            TokenDescriptor {
                keys: vec![Tenant],
                kind: TokenKind::Output
            },
            TokenDescriptor {
                keys: vec![Tenant],
                kind: TokenKind::Total
            },
        ]
    );
}

#[test]
fn a_global_token_budget_has_no_keys() {
    let tree = node(
        None,
        vec![("tokens", Some("input"), node(rate(Unit::Day, 10), vec![]))],
    )
    .descriptors;
    let shapes = tree.shapes();
    assert!(shapes.request_descriptors.is_empty());
    assert_eq!(
        shapes.token_descriptors,
        vec![TokenDescriptor {
            keys: vec![],
            kind: TokenKind::Input
        }]
    );
    assert_eq!(
        per_unit(tree.find(&[("tokens", "input")])),
        Some((Unit::Day, 10))
    );
}
