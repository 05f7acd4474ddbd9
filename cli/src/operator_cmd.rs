//! `flowmesh operator`: the Kubernetes operator (docs/operator.md).

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use flowmesh_operator::run::{run, Options};
use flowmesh_operator::Settings;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of `flowmesh operator`.
#[derive(Args)]
pub struct OperatorArgs {
    /// A namespace to watch (repeatable; none: every namespace, which needs
    /// cluster-wide RBAC).
    #[arg(long = "watch-namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Take part in leader election on a Lease (one replica reconciles,
    /// the others stand by).
    #[arg(long)]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "flowmesh-operator")]
    lease_name: String,
    /// The Lease's namespace (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The worker image of every segment (a segment may override it).
    #[arg(long)]
    worker_image: Option<String>,
    /// `imagePullPolicy` of worker containers.
    #[arg(long)]
    worker_image_pull_policy: Option<String>,
    /// Reconciles run at once, at most.
    #[arg(long, default_value_t = 4)]
    max_concurrent_reconciles: u16,
    /// Give each FlowGraph a NetworkPolicy that lets only its own segments
    /// and the operator reach the workers' ports.
    #[arg(long)]
    network_policies: bool,
    /// The health watcher: a running segment whose counters have not moved
    /// for this many seconds while its input has data is stalled and
    /// replaced (docs/operator.md, "Health").
    #[arg(long, default_value_t = 120)]
    stall_seconds: u32,
    /// The health watcher: replacements of a segment's pod without the
    /// data flowing again in between, before it gives up.
    #[arg(long, default_value_t = 5)]
    restart_budget: u32,
    /// Print the configuration these options and the environment give, as
    /// JSON, and exit without contacting the cluster.
    #[arg(long)]
    print_config: bool,
}

pub fn operator(a: OperatorArgs) -> Result<()> {
    let own_ns = std::env::var("POD_NAMESPACE").ok();
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_str()
                .ok()
                .map(String::from)
        })
        .unwrap_or_else(|| format!("flowmesh-operator-{}", std::process::id()));
    let mut settings = Settings::default();
    if let Some(i) = a.worker_image {
        settings.worker_image = i;
    }
    settings.pull_policy = a.worker_image_pull_policy;
    settings.network_policy = a.network_policies;
    settings.health.stall_seconds = f64::from(a.stall_seconds.max(1));
    settings.health.budget = a.restart_budget;
    if let Some(ns) = &own_ns {
        settings.operator_namespace = ns.clone();
    }
    let opts = Options {
        namespaces: a.namespaces,
        leader_elect: a.leader_elect,
        lease_name: a.lease_name,
        lease_namespace: a
            .lease_namespace
            .or(own_ns)
            .unwrap_or_else(|| "default".into()),
        identity,
        http: a.http,
        max_concurrent: a.max_concurrent_reconciles.max(1),
        settings,
    };
    if a.print_config {
        println!(
            "{}",
            serde_json::json!({
                "watchNamespaces": opts.namespaces,
                "leaderElect": opts.leader_elect,
                "leaseName": opts.lease_name,
                "leaseNamespace": opts.lease_namespace,
                "identity": opts.identity,
                "http": opts.http,
                "maxConcurrentReconciles": opts.max_concurrent,
                "workerImage": opts.settings.worker_image,
                "workerImagePullPolicy": opts.settings.pull_policy,
                "networkPolicies": opts.settings.network_policy,
                "stallSeconds": opts.settings.health.stall_seconds,
                "restartBudget": opts.settings.health.budget,
                "operatorVersion": opts.settings.operator_version,
                "logFormat": if a.log_format == LogFormat::Json { "json" } else { "text" },
            })
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fm-operator")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let client = kube::Client::try_default().await.context(
            "cannot reach the Kubernetes API (no in-cluster service account, no usable KUBECONFIG)",
        )?;
        run(client, opts).await?;
        Ok(())
    })
}
