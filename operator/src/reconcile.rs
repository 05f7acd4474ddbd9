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
//! - **status**: phase, conditions and per-segment figures, written only
//!   when they differ from what the status already says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowmesh_k8s::source::ResourceRef;
use flowmesh_model::naming::{fnv1a64, PeerTemplate, DEFAULT_PEER_TEMPLATE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
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
                ready_replicas: st.and_then(|s| s.ready_replicas).unwrap_or(0),
                rolling,
                restarts,
                pod_error,
                worker_state: fig.and_then(|f| f.state.clone()),
                worker_error: fig.and_then(|f| f.last_error.clone()),
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
        segs.insert(
            seg.clone(),
            json!({
                "replicas": 1,
                "readyReplicas": o.ready_replicas,
                "phase": seg_phase.as_str(),
                "address": template.render(fg, ns, seg),
                "restarts": o.restarts,
                "lastError": o.worker_error.clone().or_else(|| o.pod_error.clone()),
            }),
        );
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
    let children = build::build(&input, &ctx.settings)?;
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
    let live = ctx
        .live
        .lock()
        .expect("live lock")
        .get(&key)
        .cloned()
        .unwrap_or_default();
    let segs = observe_segments(
        &name,
        valid.partition.segments.keys().cloned(),
        &observed,
        &live,
    );
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
