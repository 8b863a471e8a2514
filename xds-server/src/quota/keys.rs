//! Names of what the stores keep: counter keys
//! `{prefix}{domain}|k1=v1|k2=v2|...|{unit}|{window_start}` (as envoyproxy/ratelimit's
//! `domain_k1_v1_..._window`), the usage ledger's hashes and day indexes, and the ids of
//! applied usage reports. Keys and values are escaped (`%` `|` `=` as `%25` `%7C` `%3D`): a
//! model id is chosen by the caller, and must not be able to name another descriptor's
//! counter.

use super::window::Unit;

/// Default `store.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "bedrock-gateway:";

/// `%`, `|` and `=` percent-encoded; everything else as it is.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; text that is not its output comes back as it is.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = &rest[at..];
        let decoded = [("%25", '%'), ("%7C", '|'), ("%3D", '=')]
            .into_iter()
            .find(|(escaped, _)| code.starts_with(escaped));
        match decoded {
            Some((escaped, c)) => {
                out.push(c);
                rest = &code[escaped.len()..];
            }
            None => {
                out.push('%');
                rest = &code[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The counter of one descriptor in one window.
pub fn counter_key<K: AsRef<str>, V: AsRef<str>>(
    prefix: &str,
    domain: &str,
    entries: &[(K, V)],
    unit: Unit,
    window_start: i64,
) -> String {
    let mut key = format!("{prefix}{}", escape(domain));
    for (k, v) in entries {
        key.push('|');
        key.push_str(&escape(k.as_ref()));
        key.push('=');
        key.push_str(&escape(v.as_ref()));
    }
    key.push('|');
    key.push_str(unit.name());
    key.push('|');
    key.push_str(&window_start.to_string());
    key
}

/// The ledger's set of `tenant|model` members that have a hash on `day` (`YYYY-MM-DD`).
pub fn usage_index_key(prefix: &str, day: &str) -> String {
    format!("{prefix}usage|{day}")
}

/// Member of a day's index set for one tenant and model.
pub fn usage_member(tenant: &str, model: &str) -> String {
    format!("{}|{}", escape(tenant), escape(model))
}

/// Splits an index member back into tenant and model.
pub fn parse_usage_member(member: &str) -> Option<(String, String)> {
    let (tenant, model) = member.split_once('|')?;
    Some((unescape(tenant), unescape(model)))
}

/// The ledger's hash of one day, tenant and model.
pub fn usage_hash_key(prefix: &str, day: &str, tenant: &str, model: &str) -> String {
    format!("{prefix}usage|{day}|{}", usage_member(tenant, model))
}

/// The key that records a usage report's id (Redis), so a batch resent under it is not
/// applied again.
pub fn report_key(prefix: &str, id: &str) -> String {
    format!("{prefix}report|{}", escape(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys() {
        assert_eq!(
            counter_key(
                "bgw:",
                "bedrock-gateway",
                &[("tenant", "team-a"), ("tokens", "total")],
                Unit::Month,
                1_800_000_000
            ),
            "bgw:bedrock-gateway|tenant=team-a|tokens=total|month|1800000000"
        );
        let no_entries: &[(&str, &str)] = &[];
        assert_eq!(
            counter_key("", "d", no_entries, Unit::Second, 5),
            "d|second|5"
        );
    }

    #[test]
    fn values_cannot_forge_other_keys() {
        let forged = counter_key(
            "",
            "d",
            &[("tenant", "a"), ("model", "m|tokens=total")],
            Unit::Minute,
            0,
        );
        let real = counter_key(
            "",
            "d",
            &[("tenant", "a"), ("model", "m"), ("tokens", "total")],
            Unit::Minute,
            0,
        );
        assert_ne!(forged, real);
        assert_eq!(forged, "d|tenant=a|model=m%7Ctokens%3Dtotal|minute|0");
    }

    #[test]
    fn escaping_round_trips() {
        for text in ["", "plain", "a|b=c%d", "%7C", "100%", "arn:aws:bedrock:x/y"] {
            assert_eq!(unescape(&escape(text)), text, "{text}");
        }
        let member = usage_member("team|a", "model=1");
        assert_eq!(
            parse_usage_member(&member),
            Some(("team|a".to_string(), "model=1".to_string()))
        );
        assert_eq!(
            usage_hash_key("p:", "2026-01-02", "t", ""),
            "p:usage|2026-01-02|t|"
        );
        assert_eq!(usage_index_key("p:", "2026-01-02"), "p:usage|2026-01-02");
        assert_eq!(report_key("p:", "w1|7"), "p:report|w1%7C7");
    }
}
