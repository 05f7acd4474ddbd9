//! Reconcile one FlowGraph: observe, validate, build, apply, status.
//!
//! - **observe**: the children it owns (listed by label) and its pods;
//! - **validate** ([`crate::validate`]): an invalid spec sets `Ready=False`
//!   and `Invalid=True` with every problem, publishes an Event, leaves the
//!   children as they are and waits for the next change (no retry loop);
//! - **build** ([`crate::build`]);
//! - **apply**: server-side apply with one field manager, only of the
//!   children whose applied hash differs from the live object's (a second
//!   reconcile of an unchanged FlowGraph writes nothing); the token Secret
//!   is created once; children that are no longer wanted are deleted by
//!   label (claims marked to be kept are left);
//! - **health and scaling** (between build and apply): the health watcher
//!   ([`crate::health`]) assesses every segment from its pods, its nodes
//!   and its worker's progress, deletes the pods it replaces and records an
//!   Event for every replacement, failure, recovery and spent budget; the
//!   autoscaler ([`crate::autoscale`]) sets each scalable segment's
//!   Deployment replicas from its producer's backlog and rate;
//! - **status**: phase, conditions and per-segment figures, written only
//!   when they differ from what the status already says; the watcher's
//!   memory (attempts, backoff, last failure) and the autoscaler's
//!   (desired replicas, backlog, last scale time) are kept there, so an
//!   operator restart keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_k8s::source::ResourceRef;
use flowmesh_model::naming::{fnv1a64, PeerTemplate, DEFAULT_PEER_TEMPLATE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Node, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::build::{self, Children, Input};
use crate::conditions::{self, Phase, SegmentObserved};
use crate::context::Context;
use crate::labels;
use crate::validate::{self, Valid};
use crate::{Error, Result};

/// How often a healthy FlowGraph is looked at again without any change
/// (its workers' states feed the phase).
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long after a failed reconcile it is retried.
pub const RETRY: Duration = Duration::from_secs(15);

/// The FlowGraph API resource (the controller works on untyped objects, so
/// that a spec that does not decode still gets a status).
pub fn flowgraph_resource() -> ApiResource {
    ApiResource::erase::<flowmesh_k8s::FlowGraph>(&())
}

/// What the observe stage finds.
#[derive(Debug, Default)]
pub struct Observed {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub bindings: Vec<RoleBinding>,
    pub policies: Vec<NetworkPolicy>,
    pub secret: Option<Secret>,
    pub pods: Vec<Pod>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    /// The cluster's nodes (None: not readable; lost nodes are then seen
    /// only through pods stuck terminating).
    pub nodes: Option<Vec<Node>>,
}

async fn list<K>(ctx: &Context, ns: &str, selector: &str) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Observe: the children of `fg` by label, its token Secret and its pods.
pub async fn observe(ctx: &Context, ns: &str, fg: &str) -> Result<Observed> {
    let sel = labels::children_selector(fg);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    Ok(Observed {
        deployments: list(ctx, ns, &sel).await?,
        services: list(ctx, ns, &sel).await?,
        claims: list(ctx, ns, &sel).await?,
        accounts: list(ctx, ns, &sel).await?,
        roles: list(ctx, ns, &sel).await?,
        bindings: list(ctx, ns, &sel).await?,
        policies: list(ctx, ns, &sel).await?,
        secret: secrets.get_opt(&build::token_secret_name(fg)).await?,
        pods: list(ctx, ns, &sel).await?,
        hpas: list(ctx, ns, &sel).await?,
        nodes: Api::<Node>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await
            .ok()
            .map(|l| l.items),
    })
}

/// The hash of what the operator applies (annotation [`labels::APPLIED_HASH`]).
pub fn applied_hash<K: Serialize>(k: &K) -> Result<String> {
    let v = serde_json::to_vec(k).map_err(|source| Error::Encode {
        what: "a child".into(),
        source,
    })?;
    Ok(format!("{:016x}", fnv1a64(&v)))
}

/// Applies `desired` unless a live object of that name carries the same
/// applied hash; true if it wrote.
async fn apply_one<K>(ctx: &Context, ns: &str, desired: &K, live: &[K]) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let mut d = desired.clone();
    let hash = applied_hash(&d)?;
    d.annotations_mut()
        .insert(labels::APPLIED_HASH.into(), hash.clone());
    let name = d.name_any();
    if live
        .iter()
        .any(|l| l.name_any() == name && l.annotations().get(labels::APPLIED_HASH) == Some(&hash))
    {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(&d),
    )
    .await?;
    ctx.metrics
        .writes
        .with_label_values(&[&K::kind(&()), "apply"])
        .inc();
    Ok(true)
}

/// Deletes the live objects whose names are not in `keep`; returns their
/// names.
async fn delete_orphans<K>(
    ctx: &Context,
    ns: &str,
    keep: &BTreeSet<String>,
    live: &[K],
) -> Result<Vec<String>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut gone = vec![];
    for l in live {
        let name = l.name_any();
        if keep.contains(&name) || l.meta().deletion_timestamp.is_some() {
            continue;
        }
        api.delete(&name, &DeleteParams::background()).await?;
        ctx.metrics
            .writes
            .with_label_values(&[&K::kind(&()), "delete"])
            .inc();
        gone.push(format!("{} {name}", K::kind(&())));
    }
    Ok(gone)
}

fn names<K: Resource>(v: &[K]) -> BTreeSet<String> {
    v.iter().map(|k| k.name_any()).collect()
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Apply: every child that differs, the token Secret if missing, and the
/// deletion of orphans. Returns a line per write (for the Event).
pub async fn apply(
    ctx: &Context,
    input: &Input<'_>,
    children: &Children,
    observed: &Observed,
) -> Result<Vec<String>> {
    let ns = input.namespace;
    let mut done = vec![];
    if observed.secret.is_none() {
        let s = build::token_secret(input, &random_token())?;
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        match api.create(&PostParams::default(), &s).await {
            Ok(_) => {
                ctx.metrics
                    .writes
                    .with_label_values(&["Secret", "create"])
                    .inc();
                done.push(format!("created Secret {}", s.name_any()));
            }
            // Made meanwhile (another reconcile, or a cache behind): keep it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    macro_rules! apply_all {
        ($desired:expr, $live:expr) => {
            for d in $desired {
                if apply_one(ctx, ns, d, $live).await? {
                    done.push(format!("applied {} {}", kind_of(d), d.name_any()));
                }
            }
        };
    }
    apply_all!(children.service_account.iter(), &observed.accounts);
    apply_all!(children.role.iter(), &observed.roles);
    apply_all!(children.role_binding.iter(), &observed.bindings);
    apply_all!(children.network_policy.iter(), &observed.policies);
    apply_all!(children.claims.iter(), &observed.claims);
    apply_all!(children.services.iter(), &observed.services);
    apply_all!(children.deployments.iter(), &observed.deployments);
    apply_all!(children.hpas.iter(), &observed.hpas);
    // Orphans: children of segments (or options) no longer wanted.
    done.extend(
        delete_orphans(
            ctx,
            ns,
            &names(&children.deployments),
            &observed.deployments,
        )
        .await?,
    );
    done.extend(delete_orphans(ctx, ns, &names(&children.services), &observed.services).await?);
    done.extend(delete_orphans(ctx, ns, &names(&children.hpas), &observed.hpas).await?);
    let kept: Vec<PersistentVolumeClaim> = observed
        .claims
        .iter()
        .filter(|c| c.annotations().get(labels::KEEP).map(String::as_str) == Some("false"))
        .cloned()
        .collect();
    done.extend(delete_orphans(ctx, ns, &names(&children.claims), &kept).await?);
    let opt = |o: &Option<_>| -> BTreeSet<String> {
        o.iter().map(|k: &NetworkPolicy| k.name_any()).collect()
    };
    done.extend(delete_orphans(ctx, ns, &opt(&children.network_policy), &observed.policies).await?);
    Ok(done)
}

fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> String {
    K::kind(&()).to_string()
}

/// What the pods of each segment say (restarts, a failing container).
fn pods_by_segment(observed: &Observed) -> BTreeMap<String, (i32, Option<String>)> {
    let mut out: BTreeMap<String, (i32, Option<String>)> = BTreeMap::new();
    for p in &observed.pods {
        let Some(seg) = p.labels().get(labels::SEGMENT) else {
            continue;
        };
        let e = out.entry(seg.clone()).or_default();
        for cs in p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            e.0 += cs.restart_count;
            let waiting = cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
                .filter(|r| r != "ContainerCreating" && r != "PodInitializing");
            let last = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.clone().or_else(|| t.reason.clone()));
            if let Some(w) = waiting {
                e.1 = Some(match last {
                    Some(m) => format!("{w}: {}", m.trim()),
                    None => w,
                });
            }
        }
    }
    out
}

/// The status stage's view of each segment.
pub fn observe_segments(
    fg: &str,
    segments: impl Iterator<Item = String>,
    observed: &Observed,
    live: &BTreeMap<String, crate::live::Figures>,
) -> BTreeMap<String, SegmentObserved> {
    let pods = pods_by_segment(observed);
    segments
        .map(|seg| {
            let name = build::deployment_name(fg, &seg);
            let d = observed.deployments.iter().find(|d| d.name_any() == name);
            let st = d.and_then(|d| d.status.as_ref());
            let rolling = d.is_some_and(|d| {
                let generation = d.metadata.generation.unwrap_or(0);
                let s = d.status.clone().unwrap_or_default();
                s.observed_generation.unwrap_or(0) < generation
                    || s.updated_replicas.unwrap_or(0) < s.replicas.unwrap_or(0)
            });
            let (restarts, pod_error) = pods
                .get(&flowmesh_model::naming::segment_label(&seg))
                .cloned()
                .unwrap_or_default();
            let fig = live.get(&seg);
            let o = SegmentObserved {
                exists: d.is_some(),
                // The pods it has (its status), else what it wants.
                replicas: st
                    .and_then(|s| s.replicas)
                    .or_else(|| d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas))
                    .unwrap_or(1),
                ready_replicas: st.and_then(|s| s.ready_replicas).unwrap_or(0),
                rolling,
                restarts,
                pod_error,
                worker_state: fig.and_then(|f| f.state.clone()),
                worker_error: fig.and_then(|f| f.last_error.clone()),
                degraded: None,
                extra: Value::Null,
            };
            (seg, o)
        })
        .collect()
}

/// The status fields the reconcile owns (the live loop owns the figures).
pub fn status_patch(
    current: &Value,
    generation: i64,
    phase: Phase,
    conds: Vec<Condition>,
    segments: &BTreeMap<String, SegmentObserved>,
    what: &ResourceRef,
    operator_version: &str,
) -> Value {
    let (fg, ns) = (what.name.as_str(), what.namespace.as_str());
    let ready = segments.values().filter(|s| s.ready_replicas > 0).count();
    let template = PeerTemplate::parse(DEFAULT_PEER_TEMPLATE).expect("the default template parses");
    let mut segs = serde_json::Map::new();
    for (seg, o) in segments {
        // The worker's own state (restartRequired among them) is the
        // live loop's `state` field.
        let seg_phase = match o.worker_state.as_deref() {
            Some("finished") => Phase::Succeeded,
            Some("failed") => Phase::Failed,
            _ if o.ready_replicas > 0 => Phase::Running,
            _ => Phase::Pending,
        };
        let mut v = json!({
            "replicas": o.replicas,
            "readyReplicas": o.ready_replicas,
            "phase": seg_phase.as_str(),
            "address": template.render(fg, ns, seg),
            "restarts": o.restarts,
            "lastError": o.worker_error.clone().or_else(|| o.pod_error.clone()),
        });
        if let (Some(m), Value::Object(x)) = (v.as_object_mut(), &o.extra) {
            m.extend(x.clone());
        }
        segs.insert(seg.clone(), v);
    }
    // Segments that are gone are removed from the status.
    if let Some(old) = current.get("segments").and_then(|s| s.as_object()) {
        for k in old.keys() {
            if !segs.contains_key(k) {
                segs.insert(k.clone(), Value::Null);
            }
        }
    }
    json!({
        "observedGeneration": generation,
        "phase": phase.as_str(),
        "ready": format!("{ready}/{}", segments.len()),
        "operatorVersion": operator_version,
        "conditions": conds,
        "segments": segs,
    })
}

/// True if applying `patch` (a JSON merge patch) to `current` changes
/// nothing.
pub fn merge_is_noop(current: &Value, patch: &Value) -> bool {
    match (current, patch) {
        (_, Value::Object(p)) => {
            let empty = serde_json::Map::new();
            let c = current.as_object().unwrap_or(&empty);
            if !current.is_object() && !p.is_empty() {
                return false;
            }
            p.iter().all(|(k, v)| match (c.get(k), v) {
                (None, Value::Null) => true,
                (None, _) => false,
                (Some(cv), v) => merge_is_noop(cv, v),
            })
        }
        (c, p) => c == p,
    }
}

async fn write_status(ctx: &Context, obj: &DynamicObject, patch: Value) -> Result<bool> {
    let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
    if merge_is_noop(&current, &patch) {
        return Ok(false);
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        &flowgraph_resource(),
    );
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": patch })),
    )
    .await?;
    Ok(true)
}

async fn publish(
    ctx: &Context,
    obj: &DynamicObject,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference = obj.object_ref(&flowgraph_resource());
    // Events are at most 1 kB of note.
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 990;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str(" …");
    }
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        tracing::warn!("cannot publish an Event for {}: {e}", obj.name_any());
    }
}

fn existing_conditions(obj: &DynamicObject) -> Vec<Condition> {
    obj.data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Reconciles one FlowGraph (the controller's entry point).
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let t0 = Instant::now();
    let r = reconcile_stages(&obj, &ctx).await;
    ctx.metrics
        .duration
        .with_label_values(&[] as &[&str])
        .observe(t0.elapsed().as_secs_f64());
    match &r {
        Ok((_, result)) => ctx.metrics.reconciles.with_label_values(&[*result]).inc(),
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&["error"]).inc();
            ctx.metrics
                .errors
                .with_label_values(&[e.metric_label()])
                .inc();
        }
    }
    r.map(|(a, _)| a)
}

/// What the controller does after a failed reconcile: retry later (not at
/// once: no hot loop).
pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        "reconciling FlowGraph {}: {err}; retrying in {RETRY:?}",
        obj.name_any()
    );
    Action::requeue(RETRY)
}

async fn reconcile_stages(obj: &DynamicObject, ctx: &Context) -> Result<(Action, &'static str)> {
    let (Some(ns), Some(name), Some(uid)) = (
        obj.metadata.namespace.clone(),
        obj.metadata.name.clone(),
        obj.metadata.uid.clone(),
    ) else {
        return Err(Error::Unnamed(obj.name_any()));
    };
    let key = (ns.clone(), name.clone());
    if obj.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        ctx.set_phase(key, None);
        return Ok((Action::await_change(), "ok"));
    }
    let generation = obj.metadata.generation.unwrap_or(0);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let what = ResourceRef {
        namespace: ns.clone(),
        name: name.clone(),
    };
    // Validate (before anything is observed or written).
    let valid: Valid = match validate::validate(&what, obj) {
        Ok(v) => v,
        Err(invalid) => {
            let message = invalid.message();
            tracing::warn!("FlowGraph {ns}/{name} is invalid:\n{message}");
            let conds = conditions::merge(
                &existing_conditions(obj),
                conditions::invalid(&message),
                generation,
                &now,
            );
            let patch = json!({
                "observedGeneration": generation,
                "phase": Phase::Invalid.as_str(),
                "conditions": conds,
            });
            if write_status(ctx, obj, patch).await? {
                publish(ctx, obj, EventType::Warning, "Invalid", "Validate", message).await;
            }
            ctx.set_phase(key, Some(Phase::Invalid));
            // Children stay as they are; the next edit triggers a reconcile.
            return Ok((Action::await_change(), "invalid"));
        }
    };
    // Observe.
    let observed = observe(ctx, &ns, &name).await?;
    // Build.
    let input = Input {
        name: &name,
        namespace: &ns,
        uid: &uid,
        spec: &valid.fetched.doc.spec,
        partition: &valid.partition,
        kubernetes: &valid.kubernetes,
    };
    let mut children = build::build(&input, &ctx.settings)?;
    // Health and scaling.
    let now_t = k8s_openapi::jiff::Timestamp::now();
    let now_s = now_t.as_millisecond() as f64 / 1000.0;
    let live = ctx
        .live
        .lock()
        .expect("live lock")
        .get(&key)
        .cloned()
        .unwrap_or_default();
    let mut w = Watch {
        ctx,
        key: &key,
        input: &input,
        observed: &observed,
        current: &current,
        now: now_s,
        extras: BTreeMap::new(),
        notes: vec![],
    };
    w.scale(&mut children);
    let degraded = w.health(&live).await?;
    let (extras, notes) = (w.extras, w.notes);
    for (ty, reason, note) in notes {
        publish(ctx, obj, ty, reason, "Watch", note).await;
    }
    // Apply.
    let done = apply(ctx, &input, &children, &observed).await?;
    if !done.is_empty() {
        tracing::info!("FlowGraph {ns}/{name}: {}", done.join(", "));
        publish(
            ctx,
            obj,
            EventType::Normal,
            "Applied",
            "Reconcile",
            done.join("; "),
        )
        .await;
    }
    // Status.
    let mut segs = observe_segments(
        &name,
        valid.partition.segments.keys().cloned(),
        &observed,
        &live,
    );
    for (seg, why) in degraded {
        if let Some(o) = segs.get_mut(&seg) {
            o.degraded = Some(why);
        }
    }
    for (seg, x) in extras {
        if let Some(o) = segs.get_mut(&seg) {
            o.extra = x;
        }
    }
    let (phase, derived) = conditions::derive(&segs);
    let conds = conditions::merge(&existing_conditions(obj), derived, generation, &now);
    let patch = status_patch(
        &current,
        generation,
        phase,
        conds,
        &segs,
        &what,
        &ctx.settings.operator_version,
    );
    write_status(ctx, obj, patch).await?;
    ctx.set_phase(key, Some(phase));
    let action = match phase {
        Phase::Succeeded => Action::await_change(),
        _ => Action::requeue(RESYNC),
    };
    Ok((action, "ok"))
}

/// Unix seconds of an RFC 3339 time in the status.
fn parse_time(v: Option<&Value>) -> Option<f64> {
    let t: k8s_openapi::jiff::Timestamp = v?.as_str()?.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// An RFC 3339 time for the status.
fn format_time(secs: f64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond((secs * 1000.0) as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn time_of(t: &Option<Time>) -> Option<f64> {
    t.as_ref().map(|t| t.0.as_millisecond() as f64 / 1000.0)
}

/// What the health watcher reads of a pod.
pub fn pod_state(p: &Pod, nodes: Option<&[Node]>, now: f64) -> crate::health::PodState {
    let st = p.status.clone().unwrap_or_default();
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
    let found = node
        .as_ref()
        .and_then(|n| nodes.map(|ns| ns.iter().find(|x| x.name_any() == *n)));
    let node_exists = !matches!(found, Some(None));
    let node_ready = found.flatten().and_then(|n| {
        n.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status == "True")
    });
    let ready_cond = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .cloned();
    let created = time_of(&p.metadata.creation_timestamp).unwrap_or(now);
    let containers = st.container_statuses.clone().unwrap_or_default();
    crate::health::PodState {
        name: p.name_any(),
        phase: st.phase.clone().unwrap_or_else(|| "Pending".into()),
        reason: st.reason.clone(),
        deleting_since: time_of(&p.metadata.deletion_timestamp),
        node,
        node_ready,
        node_exists,
        ready: ready_cond.as_ref().is_some_and(|c| c.status == "True"),
        ready_since: ready_cond
            .as_ref()
            .and_then(|c| time_of(&c.last_transition_time))
            .unwrap_or(created),
        restart_count: containers.iter().map(|c| c.restart_count).sum(),
        waiting_reason: containers.iter().find_map(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
        }),
        last_termination: containers.iter().find_map(|c| {
            c.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.clone().or_else(|| t.reason.clone()))
        }),
    }
}

/// The health watcher's memory of a segment, from the status.
fn memory_of(current: &Value, seg: &str) -> crate::health::Memory {
    let s = current.pointer(&format!("/segments/{seg}"));
    let n = |k: &str| {
        s.and_then(|s| s.get(k))
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32
    };
    crate::health::Memory {
        attempts: n("attempts"),
        replacements: n("replacements"),
        last_failure: s
            .and_then(|s| s.get("lastFailure"))
            .and_then(|v| v.as_str())
            .map(String::from),
        next_attempt_after: parse_time(s.and_then(|s| s.get("nextAttemptAfter"))),
        down_since: parse_time(s.and_then(|s| s.get("downSince"))),
        gave_up: s
            .and_then(|s| s.get("gaveUp"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    }
}

/// One reconcile's health and scaling round: what both read, and the
/// status fields and Events they produce.
struct Watch<'a> {
    ctx: &'a Context,
    key: &'a crate::context::Key,
    input: &'a Input<'a>,
    observed: &'a Observed,
    /// The FlowGraph's status as it is (the watchers' memory).
    current: &'a Value,
    /// Unix seconds.
    now: f64,
    /// Status fields per segment.
    extras: BTreeMap<String, Value>,
    /// Events to record: type, reason, note.
    notes: Vec<(EventType, &'static str, String)>,
}

impl Watch<'_> {
    /// The health watcher: assesses every segment, deletes the pods it
    /// replaces, notes the Events and the status fields; returns the degraded
    /// segments with why.
    async fn health(
        &mut self,
        live: &BTreeMap<String, crate::live::Figures>,
    ) -> Result<BTreeMap<String, String>> {
        use crate::health::{assess, Verdict};
        let (ctx, key, input, observed, current, now) = (
            self.ctx,
            self.key,
            self.input,
            self.observed,
            self.current,
            self.now,
        );
        let (extras, notes) = (&mut self.extras, &mut self.notes);
        let policy = ctx.settings.health;
        let progress = ctx
            .progress
            .lock()
            .expect("progress lock")
            .get(key)
            .cloned()
            .unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), input.namespace);
        let mut degraded = BTreeMap::new();
        for seg in input.partition.segments.keys() {
            let label = flowmesh_model::naming::segment_label(seg);
            let pods: Vec<crate::health::PodState> = observed
                .pods
                .iter()
                .filter(|p| p.labels().get(labels::SEGMENT) == Some(&label))
                .map(|p| pod_state(p, observed.nodes.as_deref(), now))
                .collect();
            let mut prog = progress.get(seg).cloned().unwrap_or_default();
            // Its input has data: a producer's output edge into it holds
            // messages or unacknowledged items; a segment without input edges
            // that runs should always move.
            let inputs: Vec<_> = input
                .partition
                .edges
                .iter()
                .filter(|e| &e.to_segment == seg)
                .collect();
            prog.upstream_has_data = inputs.is_empty()
                || inputs.iter().any(|e| {
                    live.get(&e.from_segment)
                        .and_then(|f| f.outputs.get(&e.id))
                        .is_some_and(|x| x.pending > 0 || x.in_flight > 0)
                });
            // Its consumers have not taken what it sent: backpressure.
            prog.downstream_blocked = live
                .get(seg)
                .is_some_and(|f| f.outputs.values().any(|x| x.pending > 0 || x.in_flight > 0));
            let memory = memory_of(current, seg);
            let a = assess(&policy, &pods, &prog, &memory, now);
            match &a.verdict {
            Verdict::Replace {
                pods: names,
                force,
                reason,
            } => {
                let dp = if *force {
                    DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::background()
                    }
                } else {
                    DeleteParams::background()
                };
                for n in names {
                    match pods_api.delete(n, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                    ctx.metrics
                        .writes
                        .with_label_values(&["Pod", "delete"])
                        .inc();
                }
                // The new pod gets the whole stall time to show progress.
                if let Some(p) = ctx
                    .progress
                    .lock()
                    .expect("progress lock")
                    .get_mut(key)
                    .and_then(|m| m.get_mut(seg))
                {
                    *p = crate::health::Progress {
                        since: Some(now),
                        ..Default::default()
                    };
                }
                notes.push((
                    EventType::Warning,
                    "SegmentReplaced",
                    format!(
                        "segment {seg}: {reason}; deleted pod {} (attempt {} of {}; the next no sooner than {})",
                        names.join(", "),
                        a.memory.attempts,
                        policy.budget,
                        format_time(a.memory.next_attempt_after.unwrap_or(now)),
                    ),
                ));
            }
            Verdict::GiveUp { reason } if !memory.gave_up => notes.push((
                EventType::Warning,
                "RestartBudgetSpent",
                format!("segment {seg}: {reason}; fix the cause, then edit the FlowGraph or delete the pod"),
            )),
            Verdict::Recovered => notes.push((
                EventType::Normal,
                "SegmentRecovered",
                format!(
                    "segment {seg}: data flows again after: {}",
                    memory.last_failure.clone().unwrap_or_default()
                ),
            )),
            Verdict::Wait { reason, .. } if memory.down_since.is_none() => notes.push((
                EventType::Warning,
                "SegmentDown",
                format!("segment {seg}: {reason}"),
            )),
            _ => {}
        }
            if let Some(why) = a.degraded() {
                degraded.insert(seg.clone(), why);
            }
            let m = &a.memory;
            let e = extras.entry(seg.clone()).or_insert_with(|| json!({}));
            // Defaults are left out (null removes them), as the status type
            // leaves them out.
            e["replacements"] = json!((m.replacements > 0).then_some(m.replacements));
            e["attempts"] = json!((m.attempts > 0).then_some(m.attempts));
            e["lastFailure"] = json!(m.last_failure);
            e["downSince"] = json!(m.down_since.map(format_time));
            e["nextAttemptAfter"] = json!(m.next_attempt_after.map(format_time));
            e["gaveUp"] = json!(m.gave_up.then_some(true));
        }
        Ok(degraded)
    }

    /// The autoscaler: sets the replicas of every scalable segment's
    /// Deployment in `children` (the live count when it holds), notes the
    /// Events and the status fields.
    fn scale(&mut self, children: &mut Children) {
        use crate::autoscale::{decide, Knobs, Sample};
        let (ctx, key, input, observed, current, now) = (
            self.ctx,
            self.key,
            self.input,
            self.observed,
            self.current,
            self.now,
        );
        let (extras, notes) = (&mut self.extras, &mut self.notes);
        let samples = ctx
            .samples
            .lock()
            .expect("samples lock")
            .get(key)
            .cloned()
            .unwrap_or_default();
        for (seg, spec) in &input.spec.segments {
            let Some(sc) = &spec.scaling else { continue };
            let name = build::deployment_name(input.name, seg);
            let live = observed.deployments.iter().find(|d| d.name_any() == name);
            let live_replicas = live.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
            let e = extras.entry(seg.clone()).or_insert_with(|| json!({}));
            if sc.hpa.is_some() {
                e["desiredReplicas"] = json!(live_replicas);
                e["scaleReason"] = json!("hpa");
                continue;
            }
            // The samples of every edge into it, summed per reading.
            let mut by_time: BTreeMap<i64, Sample> = BTreeMap::new();
            for edge in input
                .partition
                .edges
                .iter()
                .filter(|x| &x.to_segment == seg)
            {
                for x in samples.get(&edge.id).into_iter().flatten() {
                    let s = by_time.entry((x.at * 1000.0) as i64).or_insert(Sample {
                        at: x.at,
                        ..Default::default()
                    });
                    s.pending += x.pending;
                    s.in_flight += x.in_flight;
                    s.messages_per_second += x.messages_per_second;
                    s.replicas = s.replicas.max(x.replicas);
                }
            }
            let series: Vec<Sample> = by_time.into_values().collect();
            let k = Knobs::from_spec(sc);
            let cur = live_replicas.map(|r| r.max(0) as u32).unwrap_or(k.min);
            let last = parse_time(current.pointer(&format!("/segments/{seg}/lastScaleTime")));
            let d = decide(&k, cur, last, &series, now);
            if d.change {
                notes.push((
                    EventType::Normal,
                    "Scaled",
                    format!("segment {seg}: {}", d.reason),
                ));
                e["lastScaleTime"] = json!(format_time(now));
            }
            e["desiredReplicas"] = json!(d.replicas);
            e["backlog"] = json!(d.backlog);
            e["scaleReason"] = json!(d.reason);
            if let Some(dep) = children
                .deployments
                .iter_mut()
                .find(|x| x.name_any() == name)
            {
                if let Some(s) = dep.spec.as_mut() {
                    s.replicas = Some(d.replicas as i32);
                }
            }
        }
    }
}
