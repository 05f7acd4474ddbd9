//! The operator process: leader election on a Lease (a second replica
//! stands by and takes over), one controller per watched namespace (or one
//! for all), the live loop, and `/metrics`, `/healthz`, `/readyz` on its
//! HTTP address. SIGTERM stops the controllers gracefully and releases the
//! lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::Client;
use kube::ResourceExt;

use crate::context::Context;
use crate::live::{HttpProbe, Probe};
use crate::reconcile::{error_policy, flowgraph_resource, reconcile};
use crate::{labels, Error, Result, Settings};

/// How to run the operator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespaces to watch (empty: all).
    pub namespaces: Vec<String>,
    pub leader_elect: bool,
    pub lease_name: String,
    /// Where the Lease lives (the operator's namespace).
    pub lease_namespace: String,
    /// The holder identity (the pod's name).
    pub identity: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http: String,
    pub max_concurrent: u16,
    pub settings: Settings,
}

struct Health {
    ctx: Arc<Context>,
    /// Initialised (leading, or standing by).
    ready: AtomicBool,
    leading: AtomicBool,
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        h.ctx.metrics.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let leading = h.leading.load(Ordering::Relaxed);
    if h.ready.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            if leading {
                "ready (leading)\n"
            } else {
                "ready (standing by)\n"
            },
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Runs the controllers until SIGTERM/SIGINT (or leadership is lost, which
/// is an error: the process exits and stands by again after its restart).
pub async fn run(client: Client, opts: Options) -> Result<()> {
    let ctx = Context::new(client.clone(), opts.settings.clone());
    let health = Arc::new(Health {
        ctx: ctx.clone(),
        ready: AtomicBool::new(false),
        leading: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health.clone());
    let listener = tokio::net::TcpListener::bind(&opts.http)
        .await
        .map_err(|source| Error::Serve {
            addr: opts.http.clone(),
            source,
        })?;
    tracing::info!("serving /metrics /healthz /readyz on http://{}", opts.http);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP server: {e}");
        }
    });

    let mut lease = None;
    if opts.leader_elect {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
                .with_namespace(&opts.lease_namespace)
                .with_identity(&opts.identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await
                .map_err(|e| Error::Lease(e.to_string()))?;
        let (mut rx, task) = manager.watch().await;
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            "waiting to lead (Lease {}/{} as {})",
            opts.lease_namespace,
            opts.lease_name,
            opts.identity
        );
        let stop = tokio::select! {
            r = rx.wait_for(|leading| *leading) => {
                r.map_err(|e| Error::Lease(e.to_string()))?;
                false
            }
            _ = shutdown_signal() => true,
        };
        if stop {
            drop(rx);
            let _ = task.await;
            return Ok(());
        }
        tracing::info!("leading");
        lease = Some((rx, task));
    }
    health.leading.store(true, Ordering::Relaxed);
    health.ready.store(true, Ordering::Relaxed);

    let ar = flowgraph_resource();
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = vec![];
    let mut controllers = vec![];
    for ns in scopes {
        let (fgs, deps, svcs, pvcs): (
            Api<DynamicObject>,
            Api<Deployment>,
            Api<Service>,
            Api<PersistentVolumeClaim>,
        ) = match &ns {
            Some(ns) => (
                Api::namespaced_with(client.clone(), ns, &ar),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all_with(client.clone(), &ar),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
        let pods: Api<Pod> = match &ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let pod_ar = ar.clone();
        let c = Controller::new_with(fgs, watcher::Config::default(), ar.clone())
            .owns(deps, owned.clone())
            .owns(svcs, owned.clone())
            .owns(pvcs, owned.clone())
            // Pods belong to ReplicaSets: mapped to their FlowGraph by
            // label, so that the health watcher sees a crash, an eviction
            // or a deletion at once.
            .watches(pods, owned.clone(), move |p: Pod| {
                let fg = p.labels().get(labels::FLOWGRAPH).cloned();
                let ns = p.namespace();
                let ar = pod_ar.clone();
                fg.map(|n| ObjectRef::new_with(&n, ar).within(ns.as_deref().unwrap_or_default()))
            })
            .with_config(ControllerConfig::default().concurrency(opts.max_concurrent))
            .graceful_shutdown_on(shutdown_signal());
        stores.push(c.store());
        let ctx = ctx.clone();
        controllers.push(
            c.run(reconcile, error_policy, ctx)
                .for_each(|r| async move {
                    match r {
                        Ok((o, _)) => tracing::debug!("reconciled {o}"),
                        Err(e) => tracing::debug!("reconcile: {e}"),
                    }
                })
                .boxed_local(),
        );
    }
    let probe: Arc<dyn Probe> = Arc::new(HttpProbe);
    let live = tokio::spawn(crate::live::run(ctx.clone(), probe, stores));
    let all = futures::future::join_all(controllers);
    match &mut lease {
        Some((rx, _)) => {
            tokio::select! {
                _ = all => {}
                _ = rx.wait_for(|leading| !*leading) => {
                    live.abort();
                    return Err(Error::Lease("lost the lease; exiting so that another replica leads".into()));
                }
            }
        }
        None => {
            all.await;
        }
    }
    live.abort();
    if let Some((rx, task)) = lease {
        // Closing the channel makes the manager release the lease.
        drop(rx);
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
