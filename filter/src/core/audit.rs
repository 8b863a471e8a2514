//! The audit record of one request: who, what, and the gateway's decision. The filter hands
//! it to Envoy as filter state (`wasm.bedrock_gateway.audit`), a JSON fragment that the
//! listener's audit access log wraps into one JSON line with the time, status and duration.

use serde_json::{Map, Value};

use super::auth::Identity;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    pub request_id: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub service: Option<String>,
    pub operation: Option<&'static str>,
    pub model: Option<String>,
    /// `allow` or `deny`.
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
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        let mut members = Map::new();
        members.insert("request_id".into(), text(&self.request_id));
        members.insert("issuer".into(), text(&self.issuer));
        members.insert("tenant".into(), text(&self.tenant));
        members.insert("subject".into(), text(&self.subject));
        members.insert("service".into(), text(&self.service));
        members.insert(
            "operation".into(),
            self.operation
                .map_or(Value::Null, |o| Value::String(o.into())),
        );
        members.insert("model".into(), text(&self.model));
        members.insert("decision".into(), Value::String(self.decision.into()));
        members.insert("reason".into(), Value::String(self.reason.into()));
        let object = Value::Object(members).to_string();
        object[1..object.len() - 1].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_is_escaped_json_members() {
        let mut record = AuditRecord {
            request_id: Some("r-1".into()),
            tenant: Some("team \"a\"\n".into()),
            operation: Some("Converse"),
            ..AuditRecord::default()
        };
        record.deny("model_not_allowed");
        let line = format!("{{\"time\":\"t\",{},\"status\":403}}", record.fragment());
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["tenant"], "team \"a\"\n");
        assert_eq!(parsed["subject"], Value::Null);
        assert_eq!(parsed["decision"], "deny");
        assert_eq!(parsed["reason"], "model_not_allowed");
        assert_eq!(parsed["status"], 403);
        assert!(!record.fragment().starts_with('{'));
    }
}
