//! GenAI metrics after the OpenTelemetry GenAI semantic conventions (`gen_ai.client.token.usage`,
//! `gen_ai.client.operation.duration`, `gen_ai.server.time_to_first_token`,
//! `gen_ai.server.time_per_output_token`), as Prometheus histograms, from the usage reports
//! the filters send: each record carries its tokens, its timings and how it ended. Only
//! reports applied for the first time count (a resent batch is not counted twice).
//!
//! Label cardinality is bounded: the first [`MAX_TENANTS`] tenants and [`MAX_MODELS`] models
//! seen since the server started get their own label value; later ones are `other`.

use std::{collections::HashSet, fmt, sync::Mutex};

use gateway_common::proto::UsageRecord;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::util::metrics::LabelText;

/// Tenants with a label value of their own; the others are `other`.
pub const MAX_TENANTS: usize = 100;
/// Models with a label value of their own; the others are `other`.
pub const MAX_MODELS: usize = 50;
/// The label value of tenants and models beyond the bounds.
pub const OTHER: &str = "other";

/// Bucket bounds, as the conventions advise for each instrument.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const FIRST_TOKEN_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const PER_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Request {
    gen_ai_system: LabelText,
    gen_ai_operation_name: LabelText,
    gen_ai_request_model: LabelText,
    tenant: LabelText,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Tokens {
    gen_ai_system: LabelText,
    gen_ai_operation_name: LabelText,
    gen_ai_request_model: LabelText,
    tenant: LabelText,
    gen_ai_token_type: LabelText,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Ended {
    gen_ai_system: LabelText,
    gen_ai_operation_name: LabelText,
    gen_ai_request_model: LabelText,
    tenant: LabelText,
    /// `ok`, `error` (the upstream answered 4xx/5xx), `refused_quota`, `refused_gateway`.
    outcome: LabelText,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn first_token_histogram() -> Histogram {
    Histogram::new(FIRST_TOKEN_BUCKETS)
}
fn per_token_histogram() -> Histogram {
    Histogram::new(PER_TOKEN_BUCKETS)
}

/// First-come label values up to a bound.
#[derive(Debug)]
struct Bounded {
    seen: HashSet<String>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Self {
            seen: HashSet::new(),
            max,
        }
    }

    fn label(&mut self, value: &str) -> LabelText {
        let value = if value.is_empty() { "none" } else { value };
        if self.seen.contains(value) {
            return LabelText(value.to_string());
        }
        if self.seen.len() < self.max {
            self.seen.insert(value.to_string());
            return LabelText(value.to_string());
        }
        LabelText(OTHER.to_string())
    }
}

pub struct GenAiMetrics {
    tokens: Histograms<Tokens>,
    duration: Histograms<Ended>,
    first_token: Histograms<Request>,
    per_token: Histograms<Request>,
    tenants: Mutex<Bounded>,
    models: Mutex<Bounded>,
}

impl fmt::Debug for GenAiMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenAiMetrics").finish_non_exhaustive()
    }
}

impl Default for GenAiMetrics {
    fn default() -> Self {
        Self::with_bounds(MAX_TENANTS, MAX_MODELS)
    }
}

impl GenAiMetrics {
    pub fn with_bounds(tenants: usize, models: usize) -> Self {
        Self {
            tokens: Family::new_with_constructor(token_histogram),
            duration: Family::new_with_constructor(duration_histogram),
            first_token: Family::new_with_constructor(first_token_histogram),
            per_token: Family::new_with_constructor(per_token_histogram),
            tenants: Mutex::new(Bounded::new(tenants)),
            models: Mutex::new(Bounded::new(models)),
        }
    }

    /// Counts the records of a report applied for the first time.
    pub fn record(&self, records: &[UsageRecord]) {
        for record in records {
            let tenant = lock(&self.tenants).label(&record.tenant);
            let model = lock(&self.models).label(&record.model);
            let request = Request {
                gen_ai_system: LabelText("aws.bedrock".into()),
                gen_ai_operation_name: LabelText(record.operation.clone()),
                gen_ai_request_model: model,
                tenant,
            };
            let outcome = if record.refused {
                "refused_quota"
            } else if record.refused_by_gateway {
                "refused_gateway"
            } else if record.status_code >= 400 {
                "error"
            } else {
                "ok"
            };
            if record.duration_us > 0 {
                self.duration
                    .get_or_create(&Ended {
                        gen_ai_system: request.gen_ai_system.clone(),
                        gen_ai_operation_name: request.gen_ai_operation_name.clone(),
                        gen_ai_request_model: request.gen_ai_request_model.clone(),
                        tenant: request.tenant.clone(),
                        outcome: LabelText(outcome.into()),
                    })
                    .observe(seconds(record.duration_us));
            }
            if outcome != "ok" {
                continue;
            }
            for (kind, count) in [
                ("input", record.input_tokens),
                ("output", record.output_tokens),
                ("cache_read", record.cache_read_input_tokens),
                ("cache_write", record.cache_write_input_tokens),
            ] {
                // Cache kinds only where the prompt cache was used.
                if count == 0 && kind.starts_with("cache") {
                    continue;
                }
                self.tokens
                    .get_or_create(&Tokens {
                        gen_ai_system: request.gen_ai_system.clone(),
                        gen_ai_operation_name: request.gen_ai_operation_name.clone(),
                        gen_ai_request_model: request.gen_ai_request_model.clone(),
                        tenant: request.tenant.clone(),
                        gen_ai_token_type: LabelText(kind.into()),
                    })
                    .observe(count as f64);
            }
            if record.time_to_first_output_us > 0 {
                self.first_token
                    .get_or_create(&request)
                    .observe(seconds(record.time_to_first_output_us));
                // The time between output tokens after the first.
                if record.output_tokens > 1 && record.duration_us > record.time_to_first_output_us {
                    let after_first = record.duration_us - record.time_to_first_output_us;
                    self.per_token
                        .get_or_create(&request)
                        .observe(seconds(after_first) / (record.output_tokens - 1) as f64);
                }
            }
        }
    }

    /// The metrics in the OpenMetrics text format, without the final `# EOF`.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request by type (input: prompt tokens not in the prompt cache; output; cache_read; cache_write), of requests Bedrock answered.",
            self.tokens.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Seconds from the request reaching the gateway to the end of its response (or its refusal by a quota).",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Seconds from the request reaching the gateway to the first streamed output (ConverseStream, InvokeModelWithResponseStream).",
            Unit::Seconds,
            self.first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Seconds per output token after the first, of streamed responses.",
            Unit::Seconds,
            self.per_token.clone(),
        );
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(%error, "writing the GenAI metrics failed");
            return String::new();
        }
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_string()
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn lock(bounded: &Mutex<Bounded>) -> std::sync::MutexGuard<'_, Bounded> {
    bounded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
