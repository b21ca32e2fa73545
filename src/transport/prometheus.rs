//! `GET /metrics`: every metric of [`crate::core::telemetry`] in the Prometheus text format.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder): it is
//! installed once, by the first [`handle`] call, and shared by every server of the process
//! (tests start many). The route has no auth, like any scrape target: operators keep it off
//! the public listener, or serve it on a listener of its own with `--metrics-bind` (see
//! `docs/deploy.md`).

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::telemetry;
use crate::state::AppState;

/// Upper bounds of the latency histograms' buckets, in seconds: sub-millisecond commits
/// (SQLite group commit) up to multi-second stalls.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's Prometheus recorder, installed on first use. If another recorder was
/// installed first (an embedding program's), this one still renders, but stays empty.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => telemetry::describe(),
            Err(err) => {
                tracing::warn!(error = %err, "another metrics recorder is installed; /metrics stays empty")
            }
        }
        handle
    })
}

/// The `/metrics` route. Installs the recorder (see [`handle`]).
pub fn router() -> Router<AppState> {
    handle();
    Router::new().route("/metrics", get(metrics))
}

/// # `GET /metrics`
/// Renders every metric as Prometheus text (version 0.0.4). A scrape never touches the
/// backends: their gauges (store and Redis up, push outbox depth) are those of the last
/// periodic probe (the server's `PROBE_INTERVAL`), so scraping often costs the
/// database nothing.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Every metric in Prometheus text format 0.0.4 (see docs/deploy.md)",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub(crate) async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render())
}
