//! The audit record of one request: who, what, and the gateway's decision. The filter hands
//! it to Envoy as filter state (`wasm.bedrock_gateway.audit`), a JSON fragment that the
//! listener's audit access log wraps into one JSON line with the time, status and duration.

use super::auth::Identity;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    pub request_id: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub service: Option<String>,
    pub operation: Option<&'static str>,
    /// The primary model as the request named it.
    pub model: Option<String>,
    /// Its key (`gateway_common::model::key`), what quotas and the ledger count it under.
    pub model_key: Option<String>,
    /// `allow`, `deny`, or `pending` (a request that ended before its body was read).
    pub decision: &'static str,
    /// `ok` when allowed; otherwise why (`token_expired`, `model_not_allowed`, ...).
    pub reason: &'static str,
}

impl AuditRecord {
    pub fn identify(&mut self, identity: &Identity) {
        self.issuer = Some(identity.issuer.clone());
        self.tenant = Some(identity.tenant.clone());
        self.subject = Some(identity.subject.clone());
    }

    /// Records the primary model a call names.
    pub fn name_model(&mut self, model: Option<&str>) {
        // Named again once decided, usually the same one (its key is not made twice).
        if self.model.as_deref() == model {
            return;
        }
        self.model = model.map(str::to_string);
        self.model_key = model.map(gateway_common::model::key);
    }

    /// Decided once the body is read (the operation names its models there): what a request
    /// abandoned before then leaves in the log.
    pub fn pending(&mut self) {
        self.decision = "pending";
        self.reason = "awaiting_body";
    }

    pub fn allow(&mut self) {
        self.decision = "allow";
        self.reason = "ok";
    }

    pub fn deny(&mut self, reason: &'static str) {
        self.decision = "deny";
        self.reason = reason;
    }

    /// The record as comma-separated JSON members without braces
    /// (`"request_id":"…","tenant":null,…`), every value escaped.
    pub fn fragment(&self) -> String {
        let mut out = String::with_capacity(256);
        let fields: [(&str, Option<&str>); 10] = [
            ("request_id", self.request_id.as_deref()),
            ("issuer", self.issuer.as_deref()),
            ("tenant", self.tenant.as_deref()),
            ("subject", self.subject.as_deref()),
            ("service", self.service.as_deref()),
            ("operation", self.operation),
            ("model", self.model.as_deref()),
            ("model_key", self.model_key.as_deref()),
            ("decision", Some(self.decision)),
            ("reason", Some(self.reason)),
        ];
        for (i, (name, value)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            match value {
                Some(value) => push_json_string(&mut out, value),
                None => out.push_str("null"),
            }
        }
        out
    }
}

/// Appends `value` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    // Most values need no escape: copied whole.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn fragment_is_escaped_json_members() {
        let mut record = AuditRecord {
            request_id: Some("r-1".into()),
            tenant: Some("team \"a\"\n\u{1}\\é".into()),
            operation: Some("Converse"),
            ..AuditRecord::default()
        };
        record.deny("model_not_allowed");
        let line = format!("{{\"time\":\"t\",{},\"status\":403}}", record.fragment());
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["tenant"], "team \"a\"\n\u{1}\\é");
        assert_eq!(parsed["subject"], Value::Null);
        assert_eq!(parsed["decision"], "deny");
        assert_eq!(parsed["reason"], "model_not_allowed");
        assert_eq!(parsed["status"], 403);
        assert!(!record.fragment().starts_with('{'));
    }

    proptest::proptest! {
        #[test]
        fn any_value_reads_back(tenant in "\\PC*", subject in proptest::prelude::any::<String>()) {
            let record = AuditRecord {
                tenant: Some(tenant.clone()),
                subject: Some(subject.clone()),
                ..AuditRecord::default()
            };
            let parsed: Value = serde_json::from_str(&format!("{{{}}}", record.fragment())).unwrap();
            proptest::prop_assert_eq!(&parsed["tenant"], &Value::String(tenant));
            proptest::prop_assert_eq!(&parsed["subject"], &Value::String(subject));
        }
    }
}
