//! Builds the application from settings: database, migrations, actors, HTTP server.
//! Tests call [`Application::build`] with port 0 and talk to the real thing.

use std::net::TcpListener;
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use shadower_actors::domain::anomaly::track::TrackerConfig;
use shadower_actors::domain::ids::WorkspaceId;
use shadower_actors::domain::ingest::IngestRules;
use shadower_actors::domain::live::LiveRules;
use shadower_actors::fanout::FanOutRules;
use shadower_actors::maintenance::Maintenance;
use shadower_actors::messages::Drain;
use shadower_actors::metrics::HubMetrics;
use shadower_actors::notifier::seal::SealKey;
use shadower_actors::notifier::Notifier;
use shadower_actors::registry::{Registry, WorkspaceDeps};
use shadower_actors::rollup::Rollups;
use shadower_actors::store::{self, Partitions};
use shadower_actors::writer::{Backlog, Writer};
use shadower_handlers::auth::AuthKeys;
use shadower_handlers::bulk::BulkPool;
use shadower_handlers::ratelimit::RateLimiter;
use shadower_handlers::{AppState, IngestSettings, NotificationSettings};

use crate::settings::Settings;

pub struct Application {
    port: u16,
    server: Server,
    shutdown: Shutdown,
    writer: Addr<Writer>,
    /// The writer's thread; kept so it lives as long as the application.
    _writer_arbiter: Arbiter,
    /// The notifier's thread.
    _notifier_arbiter: Arbiter,
}

impl Application {
    /// Connects, migrates (unless `migrate` is false), starts the actors and binds the port.
    pub async fn build(settings: Settings, migrate: bool) -> anyhow::Result<Self> {
        store::ensure_database(&settings.database)
            .await
            .context("Preparing the database")?;
        let pool = store::create_pool(&settings.database, settings.database.pool_size)?;
        let query_pool = store::create_pool(&settings.database, settings.database.query_pool_size)?;
        if migrate {
            let n = store::migrate(&pool).await.context("Applying migrations")?;
            tracing::info!(applied = n, "Migrations are up to date.");
        }
        let metrics = Arc::new(HubMetrics::new());
        if settings.notifications.secret_key.is_empty() {
            anyhow::bail!(
                "configuration: notifications.secret_key: is required to serve: the base64 of 32 random bytes, e.g. `openssl rand -base64 32` (set SHADOWER__NOTIFICATIONS__SECRET_KEY)"
            );
        }
        let seal = SealKey::from_base64(&settings.notifications.secret_key)
            .context("configuration: notifications.secret_key")?;
        let notifier_arbiter = Arbiter::new();
        let notifier = {
            let notifier = Notifier::new(
                pool.clone(),
                settings.notifications.clone(),
                seal.clone(),
                metrics.clone(),
            )
            .context("Building the webhook client")?;
            Notifier::start_in_arbiter(&notifier_arbiter.handle(), move |_| notifier)
        };
        let registry = Registry::new(
            settings.workspace.arbiters,
            WorkspaceDeps {
                pool: pool.clone(),
                rules: LiveRules {
                    max_agents: settings.limits.max_agents_per_workspace,
                    max_models: settings.limits.max_models_per_workspace,
                    max_models_per_agent: settings.limits.max_models_per_agent,
                    max_agent_bytes: settings.limits.max_agent_window_bytes,
                    stale_after: settings.resources.stale_after.to_chrono(),
                },
                mailbox: settings.workspace.mailbox,
                idle_after: settings.workspace.idle_after.get(),
                request_timeout: settings.workspace.request_timeout.get(),
                fanout: FanOutRules {
                    coalesce: std::time::Duration::from_millis(settings.ws.coalesce_ms),
                    replay_frames: settings.ws.replay_frames,
                },
                metrics: metrics.clone(),
                notifier: Some(notifier.clone().recipient()),
                anomaly: TrackerConfig {
                    detector: settings.detector_config(),
                    grace_ms: settings.anomaly.grace.to_chrono().num_milliseconds(),
                    max_agents: settings.limits.max_agents_per_workspace,
                },
                anomaly_history: settings.anomaly.history.to_chrono(),
            },
        );
        // Workspaces with enabled rules or firing alerts are watched from the start (absence
        // alerts fire on a timer, with no request to start their actor).
        let watched = store::alerts::alert_workspaces(&pool)
            .await
            .context("Reading workspaces with alert rules")?;
        for ws in &watched {
            match WorkspaceId::parse(ws) {
                Ok(ws) => {
                    registry.get(&ws);
                }
                Err(e) => {
                    tracing::error!(workspace = %ws, error = %e, "Stored workspace id is invalid.")
                }
            }
        }
        tracing::info!(workspaces = watched.len(), "Alerting workspaces started.");
        let writer_pool = store::create_pool_with(
            &settings.database,
            settings.writer.concurrency,
            Some(settings.writer.statement_timeout.get()),
        )?;
        let writer_arbiter = Arbiter::new();
        let partitions = Partitions::default();
        let writer = {
            let (registry, metrics, cfg) =
                (registry.clone(), metrics.clone(), settings.writer.clone());
            let partitions = partitions.clone();
            Supervisor::start_in_arbiter(&writer_arbiter.handle(), move |_| {
                Writer::new(writer_pool, registry, metrics, cfg, partitions)
            })
        };
        let (maintenance_pool, retention) = (pool.clone(), settings.retention.clone());
        Maintenance::start_in_arbiter(&writer_arbiter.handle(), move |_| {
            Maintenance::new(
                maintenance_pool,
                partitions,
                retention.raw.to_chrono(),
                retention.rollups.to_chrono(),
            )
        });
        // The rollup actor has a connection of its own: folds never wait for the writer's
        // connections nor take them.
        let rollup_pool = store::create_pool(&settings.database, 1)?;
        let rollups = settings.rollups.clone();
        let rollup_metrics = metrics.clone();
        Rollups::start_in_arbiter(&writer_arbiter.handle(), move |_| {
            Rollups::new(
                rollup_pool,
                rollup_metrics,
                rollups.fold_every.get(),
                rollups.max_deltas,
            )
        });
        let rotated: Vec<(String, String)> = settings
            .auth
            .jwt_secrets
            .iter()
            .map(|k| (k.kid.clone(), k.secret.clone()))
            .collect();
        let secret = Some(settings.auth.jwt_secret.as_str()).filter(|s| !s.is_empty());
        let registry_for_shutdown = registry.clone();
        let redis = shadower_handlers::redis_pool(&settings.redis.url).context("redis.url")?;
        let limiter = RateLimiter::new(
            redis.clone(),
            &settings.redis.key_prefix,
            settings.rate_limit.clone(),
            metrics.rate_limit_local.clone(),
            metrics.rate_limit_redis_calls.clone(),
            metrics.rate_limit_held.clone(),
        );
        let state = web::Data::new(AppState {
            auth: AuthKeys::new(secret, &rotated),
            ingest: IngestSettings {
                rules: IngestRules {
                    max_events: settings.ingest.max_events,
                    max_keys_per_event: settings.ingest.max_keys_per_event,
                    max_age: settings.ingest.max_age.to_chrono(),
                    max_future: settings.ingest.max_future.to_chrono(),
                },
                max_body_bytes: settings.ingest.max_body_bytes,
            },
            bulk: BulkPool::start(settings.ingest.bulk_threads)
                .context("starting the bulk-parse threads")?,
            writer: writer.clone(),
            backlog: Backlog::new(settings.writer.max_backlog_rows),
            registry,
            metrics,
            pool,
            query_pool,
            ready: Default::default(),
            redis,
            ws: settings.ws.clone(),
            ws_caps: Default::default(),
            limiter,
            anomaly_max_buckets: settings.anomaly.max_detect_buckets,
            redis_prefix: settings.redis.key_prefix.clone(),
            redis_timeout: settings.redis.timeout.get(),
            retention_rollups: settings.retention.rollups.to_chrono(),
            analytics: settings.analytics.clone(),
            retention_raw: settings.retention.raw.to_chrono(),
            alerts: settings.alerts.clone(),
            notifications: NotificationSettings {
                allow_private_targets: settings.notifications.allow_private_targets,
            },
            seal,
            notifier: notifier.recipient(),
        });
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!("Binding {}:{}", settings.server.host, settings.server.port)
            })?;
        let port = listener.local_addr()?.port();
        let origins = settings.server.cors_allowed_origins.clone();
        let request_timeout = settings.server.request_timeout.get();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Referrer-Policy", "no-referrer")),
                )
                .wrap(actix_web::middleware::Condition::new(
                    !origins.is_empty(),
                    cors(&origins),
                ))
                .wrap_fn(shadower_handlers::conn::end_unread_uploads)
                // Outermost: every answer, CORS refusals and timeouts included, carries
                // its request id.
                .wrap_fn(move |req, srv| log_request(req, srv, request_timeout))
                .configure(shadower_handlers::configure)
                .default_service(web::to(shadower_handlers::error::not_found))
        })
        .on_connect(shadower_handlers::conn::on_connect(
            settings.server.send_timeout.get(),
        ))
        .listen(listener)?
        // Our own signal handling closes WebSocket sessions first (see `Shutdown`).
        .disable_signals()
        .max_connections(settings.server.max_connections)
        .keep_alive(settings.server.keep_alive.get())
        .client_request_timeout(settings.server.client_request_timeout.get())
        .client_disconnect_timeout(settings.server.client_disconnect_timeout.get())
        .shutdown_timeout(settings.server.shutdown_timeout.get().as_secs());
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        tracing::info!(port, "Listening.");
        let server = server.run();
        Ok(Self {
            port,
            shutdown: Shutdown {
                server: server.handle(),
                registry: registry_for_shutdown,
            },
            server,
            writer,
            _writer_arbiter: writer_arbiter,
            _notifier_arbiter: notifier_arbiter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What stops the hub gracefully (signals use it; so do tests).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM/SIGINT (or [`Shutdown::run`]): then closes WebSocket sessions
    /// with 1001, stops accepting, lets in-flight requests finish, and waits until the writer
    /// has committed what it holds.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let on_signal = self.shutdown.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("Signal received; shutting down.");
            on_signal.run().await;
        });
        self.server.await?;
        tracing::info!("Server stopped; draining the writer.");
        self.writer
            .send(Drain)
            .await
            .context("Draining the writer")?;
        tracing::info!("Writer drained; bye.");
        Ok(())
    }
}

/// Bounds each request by `server.request_timeout` (503 past it) and logs it at `debug`:
/// method and path, never the query (WebSocket tokens travel there). One line per request
/// costs too much at 20 000 requests/s to be on by default; errors are logged where they
/// happen. Cheaper than actix's `Logger`, which runs a regex over every path.
fn log_request<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
    timeout: std::time::Duration,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    use actix_web::http::header::HeaderValue;
    use shadower_handlers::request_id;
    let started = std::time::Instant::now();
    let id = request_id::pick(req.headers().get(request_id::HEADER));
    let fut = request_id::scope(id.clone(), srv.call(req));
    async move {
        let header = HeaderValue::from_str(&id).ok();
        // An error leaving this middleware becomes its response here, inside the request's
        // scope, so that it too names the request (body and header).
        let failed = |e: actix_web::Error| {
            let id = id.clone();
            let header = header.clone();
            async move {
                let cause = e.to_string();
                let mut res = request_id::scope(id, async move { e.error_response() }).await;
                if let Some(v) = header {
                    res.headers_mut().insert(request_id::HEADER, v);
                }
                actix_web::error::InternalError::from_response(cause, res).into()
            }
        };
        let mut res = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(failed(e).await),
            Err(_) => {
                let e = shadower_handlers::error::ApiError::Unavailable(format!(
                    "the request took longer than server.request_timeout ({}s); retry",
                    timeout.as_secs_f64()
                ));
                return Err(failed(e.into()).await);
            }
        };
        if let Some(v) = header {
            res.headers_mut().insert(request_id::HEADER, v);
        }
        tracing::debug!(
            target: "shadower_hub::http",
            request_id = &*id,
            method = %res.request().method(),
            path = res.request().path(),
            status = res.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "Request."
        );
        Ok(res)
    }
}

/// Stops the hub gracefully: WebSocket sessions get close 1001 (they would otherwise hold
/// the server open until `server.shutdown_timeout`), then the server stops accepting and
/// lets in-flight requests finish.
#[derive(Clone)]
pub struct Shutdown {
    server: ServerHandle,
    registry: Arc<Registry>,
}

impl Shutdown {
    pub async fn run(&self) {
        self.registry.close_all_sessions().await;
        self.server.stop(true).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("Cannot listen for signals; stop the hub with SIGKILL.");
            std::future::pending::<()>().await
        }
    }
}

/// CORS for the dashboard: the configured origins may call every route with a bearer token
/// and read the rate-limit headers. Other origins get no CORS headers (the browser blocks
/// them); the request itself is not refused, since only browsers enforce CORS.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "retry-after",
            "x-request-id",
        ])
        .block_on_origin_mismatch(false)
        .max_age(600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}
