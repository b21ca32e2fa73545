//! Builds the whole HTTP service (every transport on one port) and runs it.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::hub::Hub;
use crate::state::AppState;
use crate::transport::http::{self, error::error_response};
use crate::transport::{MAX_PAYLOAD_BYTES, prometheus, socketio, sse, web, ws};

/// How often the backends are probed for the metrics (store and Redis up, outbox depth):
/// the only probes there are, however often `/metrics` is scraped.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long shutdown waits for the background loops to end once told to stop.
const TASKS_GRACE: Duration = Duration::from_secs(2);

/// The complete service: every route with its layers, and the realtime handles (to close
/// connections at shutdown). Must be called inside a Tokio runtime: starts the node's hub.
pub fn app(state: AppState) -> (Router, Realtime) {
    let hub = Hub::start(
        state.chat.clone(),
        state.store.clone(),
        state.bus.clone(),
        state.config.ws.ping_interval,
        &state.tasks,
    );
    let (socketio_layer, io) = socketio::layer(&state, &hub);
    let request_span = |request: &Request<_>| {
        let id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("request", id, method = %request.method(), path = request.uri().path())
    };
    let mut router = http::router(&state)
        .merge(web::router())
        .merge(ws::router(hub.clone()))
        .merge(sse::router(hub.clone()));
    // With `--metrics-bind`, /metrics is served there only (see [`serve`]).
    if state.config.metrics_bind.is_none() {
        router = router.merge(prometheus::router());
    }
    let router = router
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "invalid", "method not allowed on this route")
        })
        .layer(socketio_layer)
        .layer(axum::middleware::map_request(socketio::detach_handshake))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .layer(CatchPanicLayer::custom(|_| panic_response()))
        .layer(axum::middleware::from_fn(http::rejections::record))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state);
    (router, Realtime { io, hub })
}

/// Handles on the realtime side, to close its connections at shutdown.
pub struct Realtime {
    /// Socket.IO (its engine, which closes every socket at once).
    pub io: SocketIo,
    /// The node's hub: every realtime connection, whatever its transport.
    pub hub: Arc<Hub>,
}

fn panic_response() -> Response {
    tracing::error!("handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains and returns within
/// `--shutdown-timeout`: readiness turns false and new handshakes get 503 at once; running
/// requests and realtime events finish and are answered (so every acked message is
/// committed); then WebSocket clients get close 1012, Socket.IO clients a server-side
/// disconnect and SSE streams end, all told to reconnect; the push worker stops last.
/// With `--metrics-bind`, `/metrics` is served on a listener of its own (bound here) until
/// then.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tasks = state.tasks.clone();
    tasks.spawn("housekeeping", {
        let (chat, handshakes) = (state.chat.clone(), state.handshakes.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                chat.housekeeping();
                handshakes.forget_idle();
            }
        }
    });
    tasks.spawn("backend probe", {
        let chat = state.chat.clone();
        async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                chat.observe_backends(PROBE_INTERVAL).await;
                prometheus::handle().run_upkeep();
            }
        }
    });
    if let Some(addr) = state.config.metrics_bind {
        let listener = TcpListener::bind(addr).await.inspect_err(|err| {
            tracing::error!(%addr, error = %err, "could not bind the metrics listener");
        })?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        let router = prometheus::router().with_state(state.clone());
        tasks.spawn("metrics listener", async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(error = %err, "the metrics listener failed");
            }
        });
    }
    let shutdown_timeout = state.config.connections.shutdown_timeout;
    let push_worker = state.push_worker.clone().map(|worker| worker.spawn(&tasks));
    let draining = state.draining.clone();
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(error = %err, "could not set TCP_NODELAY");
        }
    });
    let (router, realtime) = app(state);
    let (started, shutdown_started) = tokio::sync::oneshot::channel::<()>();
    let hub = realtime.hub.clone();
    let graceful = async move {
        shutdown.await;
        draining.store(true, Ordering::SeqCst);
        let _ = started.send(());
        tracing::info!("shutting down: finishing in-flight requests and events, then closing connections");
        realtime.hub.drain();
        realtime.hub.in_flight().idle().await;
        realtime.io.close().await;
    };
    let serving = async move {
        let result = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(graceful)
            .into_future()
            .await;
        // Upgraded connections outlive their HTTP request: wait for their acks and 1012.
        hub.closed().await;
        result
    };
    let bound = async move {
        match shutdown_started.await {
            Ok(()) => tokio::time::sleep(shutdown_timeout).await,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = serving => result,
        () = bound => {
            tracing::warn!(timeout = ?shutdown_timeout, "shutdown timeout: exiting with connections still open");
            Ok(())
        }
    };
    // The push worker first, gracefully (its sends finish), then every other loop.
    if let Some(worker) = push_worker {
        worker.stop().await;
    }
    if !tasks.stop(TASKS_GRACE).await {
        tracing::warn!(grace = ?TASKS_GRACE, "background tasks still running at exit");
    }
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
