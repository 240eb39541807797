//! Prometheus metrics of the control plane.
//!
//! 1. Latencies are observed where they happen: sandbox create (request to `running`) and
//!    exec (start to exit).
//! 2. Errors are counted by code by the API's error mapping ([`Metrics::count_error`]).
//! 3. Sandboxes by state are counted from the store when scraped ([`crate::Control::metrics_text`]),
//!    so the figure is right after a restart too.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    create_seconds: Histogram,
    exec_seconds: Histogram,
    errors: Family<CodeLabel, Counter>,
    sandboxes: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hutch");
        let create_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let exec_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let errors = Family::<CodeLabel, Counter>::default();
        let sandboxes = Family::<StateLabel, Gauge>::default();
        registry.register(
            "sandbox_create_seconds",
            "Time from a create request to a running sandbox",
            create_seconds.clone(),
        );
        registry.register(
            "exec_seconds",
            "Time from an exec's start to its exit",
            exec_seconds.clone(),
        );
        registry.register("api_errors", "Error replies by code", errors.clone());
        registry.register(
            "sandboxes",
            "Sandboxes that are not stopped or failed, by state",
            sandboxes.clone(),
        );
        Metrics {
            registry,
            create_seconds,
            exec_seconds,
            errors,
            sandboxes,
        }
    }

    pub fn observe_create(&self, d: Duration) {
        self.create_seconds.observe(d.as_secs_f64());
    }

    pub fn observe_exec(&self, d: Duration) {
        self.exec_seconds.observe(d.as_secs_f64());
    }

    /// Counts one error reply with stable code `code`.
    pub fn count_error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    pub(crate) fn set_sandboxes(&self, state: &str, n: i64) {
        self.sandboxes
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .set(n);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
