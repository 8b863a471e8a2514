//! The one way the server writes Prometheus metrics. Each component that has something to
//! count implements [`Collect`] beside its state (credentials, identity, quotas, reloads, ADS
//! streams); [`encode`] writes them all, in the OpenMetrics text format, with the
//! `prometheus-client` crate: the admin port's `/metrics` only lists the components.

use std::{
    fmt::{self, Write as _},
    sync::Arc,
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Prefix of every metric the server writes.
pub const PREFIX: &str = "xds_server";

/// The media type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A component's metrics, read at each scrape.
pub trait Collect: Send + Sync + 'static {
    /// Writes the component's metrics as of `now`.
    fn collect(&self, metrics: &mut MetricWriter<'_>, now: SystemTime) -> fmt::Result;
}

/// Writes counters and gauges, plain or by one label. Counter names are given without the
/// `_total` suffix: the OpenMetrics format adds it to the sample (so `config_reloads` is
/// scraped as `xds_server_config_reloads_total`).
pub struct MetricWriter<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl MetricWriter<'_> {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        counter.encode(self.descriptor(name, help, &counter)?)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let gauge = ConstGauge::new(value);
        gauge.encode(self.descriptor(name, help, &gauge)?)
    }

    /// One counter per value of `label`.
    pub fn counters<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl IntoIterator<Item = (&'v str, u64)>,
    ) -> fmt::Result {
        let metrics = values.into_iter().map(|(v, n)| (v, ConstCounter::new(n)));
        self.family(name, help, label, metrics)
    }

    /// One gauge per value of `label`.
    pub fn gauges<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl IntoIterator<Item = (&'v str, i64)>,
    ) -> fmt::Result {
        let metrics = values.into_iter().map(|(v, n)| (v, ConstGauge::new(n)));
        self.family(name, help, label, metrics)
    }

    fn family<'v, M: EncodeMetric + Default>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        metrics: impl Iterator<Item = (&'v str, M)>,
    ) -> fmt::Result {
        let mut family = self.descriptor(name, help, &M::default())?;
        for (value, metric) in metrics {
            let labels = [(label, Escaped(value))];
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn descriptor<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        metric: &impl EncodeMetric,
    ) -> Result<prometheus_client::encoding::MetricEncoder<'s>, fmt::Error> {
        debug_assert!(!name.ends_with("_total"), "{name}: counters get _total");
        self.encoder
            .encode_descriptor(name, help, None, metric.metric_type())
    }
}

/// Every component's metrics as of `now`, in the OpenMetrics text format.
pub fn encode(components: &[Arc<dyn Collect>], now: SystemTime) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    for component in components {
        registry.register_collector(Box::new(Scrape {
            component: Arc::clone(component),
            now,
        }));
    }
    let mut text = String::new();
    // Writing into a String only fails if a component's collect does.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "writing the metrics failed");
    }
    text
}

/// A component at one scrape.
struct Scrape {
    component: Arc<dyn Collect>,
    now: SystemTime,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.component
            .collect(&mut MetricWriter { encoder }, self.now)
    }
}

/// A label value with backslash, double quote and line feed escaped, as the text format wants
/// (the crate writes label values as they are).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        escape(self.0, encoder)
    }
}

/// An owned label value, escaped like [`Escaped`]: for label sets of metric families kept
/// between scrapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelText(pub String);

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        escape(&self.0, encoder)
    }
}

fn escape(value: &str, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
    {
        for c in value.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    struct Sample;

    impl Collect for Sample {
        fn collect(&self, metrics: &mut MetricWriter<'_>, now: SystemTime) -> fmt::Result {
            metrics.counter("things", "Things seen.", 3)?;
            metrics.gauge("now_seconds", "The time.", crate::util::unix_seconds(now))?;
            metrics.gauges(
                "level",
                "Per name.",
                "name",
                [("a \"b\"\\\nc", -1), ("d", 2)],
            )?;
            metrics.counters("empty", "No samples.", "name", [])
        }
    }

    #[test]
    fn writes_openmetrics_text_with_escaped_labels() {
        let text = encode(&[Arc::new(Sample) as Arc<dyn Collect>], UNIX_EPOCH);
        assert_eq!(
            text,
            "# HELP xds_server_things Things seen.\n\
             # TYPE xds_server_things counter\n\
             xds_server_things_total 3\n\
             # HELP xds_server_now_seconds The time.\n\
             # TYPE xds_server_now_seconds gauge\n\
             xds_server_now_seconds 0\n\
             # HELP xds_server_level Per name.\n\
             # TYPE xds_server_level gauge\n\
             xds_server_level{name=\"a \\\"b\\\"\\\\\\nc\"} -1\n\
             xds_server_level{name=\"d\"} 2\n\
             # HELP xds_server_empty No samples.\n\
             # TYPE xds_server_empty counter\n\
             # EOF\n"
        );
    }
}
