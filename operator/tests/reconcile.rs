//! Reconcile against a mocked API server (kube's `Client` over a
//! `tower-test` mock answered by an in-memory fake, tests/common): the
//! writes each reconcile makes, counted request by request.

mod common;

use std::sync::Arc;

use common::Fake;
use flowmesh_operator::reconcile::reconcile;
use flowmesh_operator::{Context, Settings};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

const NS: &str = "radio";

fn flowgraph(gain: &str, n: u64, with_back: bool) -> Value {
    let seg_back = if with_back { "back" } else { "front" };
    json!({
        "apiVersion": "flowmesh.dev/v1alpha1",
        "kind": "FlowGraph",
        "metadata": {"name": "tone", "namespace": NS, "uid": "fg-uid-1", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {
            "blocks": {
                "src": {"kind": "signal_source", "params": {"type": "cf32", "samp_rate": 1e6, "frequency": 1e3}, "segment": "front"},
                "gain": {"kind": "multiply_const", "params": {"type": "cf32", "constant": gain}, "segment": "front"},
                "head": {"kind": "head", "params": {"type": "cf32", "n": n}, "segment": seg_back},
                "sink": {"kind": "null_sink", "params": {"type": "cf32"}, "segment": seg_back}
            },
            "connections": [["src.out", "gain.in"], ["gain.out", "head.in"], ["head.out", "sink.in"]]
        }
    })
}

fn setup() -> (Arc<Context>, Fake) {
    let (client, fake) = Fake::start();
    (Context::new(client, Settings::default()), fake)
}

/// Stores `spec`'s object as a new generation (as an edit with kubectl
/// would), keeping its status.
fn edit(fake: &Fake, obj: Value) {
    let old = fake.get("flowgraphs", NS, "tone");
    let mut o = obj;
    if let Some(old) = old {
        let g = old["metadata"]["generation"].as_i64().unwrap();
        o["metadata"]["generation"] = json!(g + 1);
        if let Some(s) = old.get("status") {
            o["status"] = s.clone();
        }
    }
    fake.put("flowgraphs", o);
}

async fn run(ctx: &Arc<Context>, fake: &Fake) -> Action {
    let obj: DynamicObject =
        serde_json::from_value(fake.get("flowgraphs", NS, "tone").unwrap()).unwrap();
    reconcile(Arc::new(obj), ctx.clone())
        .await
        .expect("reconcile succeeds")
}

fn summary(w: &[common::Logged]) -> Vec<String> {
    w.iter()
        .map(|l| {
            format!(
                "{} {}{}{}",
                l.method,
                l.plural,
                l.name.as_ref().map(|n| format!("/{n}")).unwrap_or_default(),
                l.subresource
                    .as_ref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        x => x.clone(),
    }
}

fn template_hash(fake: &Fake, deployment: &str) -> String {
    fake.get("deployments", NS, deployment).unwrap()["spec"]["template"]["metadata"]["annotations"]
        ["flowmesh.dev/segment-hash"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn first_apply_creates_the_children_and_a_second_reconcile_writes_nothing() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    let action = run(&ctx, &fake).await;
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(30)));
    let w = summary(&fake.writes_since(0));
    for expected in [
        "POST secrets",
        "PATCH serviceaccounts/tone-worker",
        "PATCH roles/tone-worker",
        "PATCH rolebindings/tone-worker",
        "PATCH services/tone-front",
        "PATCH services/tone-back",
        "PATCH deployments/tone-front",
        "PATCH deployments/tone-back",
        "PATCH flowgraphs/tone/status",
        "POST events",
    ] {
        assert!(w.iter().any(|x| x == expected), "no `{expected}` in {w:#?}");
    }
    // Labels and owner references.
    let d = fake.get("deployments", NS, "tone-back").unwrap();
    assert_eq!(d["metadata"]["labels"]["flowmesh.dev/segment"], "back");
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "flowmesh-operator"
    );
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "fg-uid-1");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--segment", "back"]),
        "{args:?}"
    );
    let svc = fake.get("services", NS, "tone-back").unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let token = fake.get("secrets", NS, "tone-token").unwrap();
    assert_eq!(
        token["data"]["token"].as_str().unwrap().len(),
        88,
        "{token}"
    );
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Pending");
    assert_eq!(st["ready"], "0/2");
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(
        st["segments"]["back"]["address"],
        "tone-back.radio.svc:7400"
    );

    // What was written is the CRD's status type, field for field (a field
    // the schema does not have would be pruned by the API server, and every
    // reconcile would write it again).
    let typed: flowmesh_k8s::FlowGraphStatus = serde_json::from_value(st.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert!(
        flowmesh_operator::reconcile::merge_is_noop(&back, &strip_nulls(&st)),
        "the status has fields its type does not: {st:#}\nvs {back:#}"
    );

    // Unchanged: zero writes.
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let w = fake.writes_since(mark);
    assert!(w.is_empty(), "a second reconcile wrote: {:#?}", summary(&w));
}

#[tokio::test]
async fn an_invalid_spec_sets_the_condition_and_an_event_and_writes_no_child() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    let before = fake.all("deployments");
    let mut bad = flowgraph("0.5", 1000, true);
    bad["spec"]["blocks"]["gain"]["kind"] = json!("multiply_cosnt");
    bad["spec"]["blocks"]["head"]["params"]["n"] = json!("many");
    edit(&fake, bad);
    let mark = fake.log_len();
    let action = run(&ctx, &fake).await;
    // Waits for the next change: no requeue.
    assert_eq!(action, Action::await_change());
    let w = summary(&fake.writes_since(mark));
    assert_eq!(
        w,
        vec!["PATCH flowgraphs/tone/status", "POST events"],
        "{w:#?}"
    );
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Invalid");
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Invalid");
    let msg = ready["message"].as_str().unwrap();
    // Every problem, with its path.
    assert!(msg.contains("blocks.gain.kind"), "{msg}");
    assert!(msg.contains("blocks.head.params.n"), "{msg}");
    let ev = fake
        .writes_since(mark)
        .into_iter()
        .find(|l| l.plural == "events")
        .unwrap();
    assert_eq!(ev.body.as_ref().unwrap()["reason"], "Invalid");
    assert_eq!(ev.body.as_ref().unwrap()["type"], "Warning");
    // Children untouched.
    assert_eq!(fake.all("deployments"), before);
    // The same invalid spec again: nothing written (no hot loop of writes).
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert!(fake.writes_since(mark).is_empty());
}

#[tokio::test]
async fn a_removed_segment_s_children_are_deleted() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    edit(&fake, flowgraph("0.5", 1000, false));
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let w = summary(&fake.writes_since(mark));
    assert!(
        w.contains(&"DELETE deployments/tone-back".to_string()),
        "{w:#?}"
    );
    assert!(
        w.contains(&"DELETE services/tone-back".to_string()),
        "{w:#?}"
    );
    assert!(fake.get("deployments", NS, "tone-back").is_none());
    assert!(fake.get("deployments", NS, "tone-front").is_some());
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert!(st["segments"].get("back").is_none(), "{st}");
}

#[tokio::test]
async fn a_settable_change_rolls_nothing_and_another_change_rolls_only_its_segment() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    let (front, back) = (
        template_hash(&fake, "tone-front"),
        template_hash(&fake, "tone-back"),
    );
    // `constant` of multiply_const is settable: applied live by the workers.
    edit(&fake, flowgraph("0.25", 1000, true));
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let w = summary(&fake.writes_since(mark));
    assert!(
        !w.iter().any(|x| x.starts_with("PATCH deployments")),
        "{w:#?}"
    );
    assert_eq!(template_hash(&fake, "tone-front"), front);
    // `n` of head is not settable: only the back segment rolls.
    edit(&fake, flowgraph("0.25", 2000, true));
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let w = summary(&fake.writes_since(mark));
    let deps: Vec<&String> = w
        .iter()
        .filter(|x| x.starts_with("PATCH deployments"))
        .collect();
    assert_eq!(deps, vec!["PATCH deployments/tone-back"], "{w:#?}");
    assert_eq!(template_hash(&fake, "tone-front"), front);
    assert_ne!(template_hash(&fake, "tone-back"), back);
}

#[tokio::test]
async fn conditions_keep_their_transition_times_when_nothing_flips() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    let conds = |fake: &Fake| -> Vec<Value> {
        fake.get("flowgraphs", NS, "tone").unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .clone()
    };
    let find = |c: &[Value], t: &str| c.iter().find(|x| x["type"] == t).unwrap().clone();
    let first = conds(&fake);
    assert_eq!(find(&first, "Ready")["status"], "False");
    // Let the clock move (transition times are in seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Both Deployments become ready: Ready flips, the others do not.
    for d in ["tone-front", "tone-back"] {
        fake.edit("deployments", NS, d, |o| {
            o["status"] = json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                                 "observedGeneration": o["metadata"]["generation"]});
        });
    }
    run(&ctx, &fake).await;
    let second = conds(&fake);
    assert_eq!(find(&second, "Ready")["status"], "True");
    assert_ne!(
        find(&second, "Ready")["lastTransitionTime"],
        find(&first, "Ready")["lastTransitionTime"]
    );
    for t in ["Degraded", "Invalid"] {
        assert_eq!(
            find(&second, t)["lastTransitionTime"],
            find(&first, t)["lastTransitionTime"],
            "{t}"
        );
    }
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["ready"], "2/2");
}

/// A probe that answers every worker's `/status` with `state` at `rate`.
struct FakeProbe {
    state: &'static str,
    rate: f64,
}

impl flowmesh_operator::live::Probe for FakeProbe {
    fn status(
        &self,
        url: &str,
        token: &str,
    ) -> Result<flowmesh_model::status::WorkerStatus, String> {
        assert_eq!(token.len(), 64, "the graph's token is sent");
        assert!(url.ends_with(".radio.svc:9400"), "{url}");
        let v = json!({
            "flowgraph": "tone", "segment": "x", "generation": 1, "state": self.state,
            "uptimeSeconds": 1.0, "itemsPerSecond": self.rate, "backlogItems": 0,
            "itemsLost": {"peer_lost": 3}, "blocks": {}, "edges": [], "params": {}
        });
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn the_live_loop_writes_figures_only_when_they_change_and_feeds_the_phase() {
    use kube::runtime::reflector;
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    let mut writer = reflector::store::Writer::<DynamicObject>::new(
        flowmesh_operator::reconcile::flowgraph_resource(),
    );
    let store = writer.as_reader();
    let obj: DynamicObject =
        serde_json::from_value(fake.get("flowgraphs", NS, "tone").unwrap()).unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
    let probe: Arc<dyn flowmesh_operator::live::Probe> = Arc::new(FakeProbe {
        state: "running",
        rate: 2_051_234.0,
    });
    let writes =
        flowmesh_operator::live::poll_once(&ctx, probe.clone(), std::slice::from_ref(&store)).await;
    assert_eq!(writes, 1);
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["throughput"], "2.05M items/s");
    assert_eq!(st["segments"]["back"]["state"], "running");
    assert_eq!(st["segments"]["back"]["itemsLost"]["peer_lost"], 3);
    // The same figures again: nothing written.
    let obj: DynamicObject =
        serde_json::from_value(fake.get("flowgraphs", NS, "tone").unwrap()).unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
    assert_eq!(
        flowmesh_operator::live::poll_once(&ctx, probe, std::slice::from_ref(&store)).await,
        0
    );
    // Every worker finished: the next reconcile's phase is Succeeded.
    let done: Arc<dyn flowmesh_operator::live::Probe> = Arc::new(FakeProbe {
        state: "finished",
        rate: 0.0,
    });
    flowmesh_operator::live::poll_once(&ctx, done, &[store]).await;
    let action = run(&ctx, &fake).await;
    assert_eq!(action, Action::await_change());
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Succeeded");
    // The metrics count the reconciles and the phase.
    let text = ctx.metrics.render();
    assert!(
        text.contains("flowmesh_operator_flowgraphs{phase=\"Succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flowmesh_operator_reconciles_total{result=\"ok\"} 2"),
        "{text}"
    );
}

// ---------------------------------------------------------------------
// Health watcher and autoscaler (docs/operator.md, "Health",
// "Autoscaling").

/// A probe whose answers the test sets per segment (by the Service or pod
/// IP in the URL): the worker's state, a counter total (its progress) and
/// its output edges (id, pending, in flight, messages/s, replicas).
#[derive(Default)]
struct Scripted {
    by_segment: std::sync::Mutex<std::collections::BTreeMap<String, Value>>,
}

impl Scripted {
    fn set(&self, url_part: &str, counters: u64, outputs: &[(&str, u64, u64, f64, u64)]) {
        let edges: Vec<Value> = outputs
            .iter()
            .map(|(id, pending, in_flight, mps, replicas)| {
                json!({"edge": id, "role": "output", "generation": 1, "connections": 1,
                       "items": counters, "bytes": 0, "frames": 0, "gaps": 0, "itemsLost": {},
                       "restarts": 0, "backlogItems": pending, "retainedItems": 0,
                       "retentionItems": 0, "replicas": replicas, "pending": pending,
                       "inFlight": in_flight, "messagesPerSecond": mps})
            })
            .collect();
        let v = json!({
            "flowgraph": "tone", "segment": url_part, "generation": 1, "state": "running",
            "uptimeSeconds": 1.0, "itemsPerSecond": 1.0, "backlogItems": 0, "itemsLost": {},
            "blocks": {"b": {"kind": "x", "itemsIn": counters, "itemsOut": 0, "busySeconds": 0.0}},
            "edges": edges, "params": {}
        });
        self.by_segment
            .lock()
            .unwrap()
            .insert(url_part.to_string(), v);
    }
}

/// The live loop's view of a [`Scripted`] the test keeps changing.
struct ScriptedProbe(Arc<Scripted>);

impl flowmesh_operator::live::Probe for ScriptedProbe {
    fn status(
        &self,
        url: &str,
        _token: &str,
    ) -> Result<flowmesh_model::status::WorkerStatus, String> {
        let m = self.0.by_segment.lock().unwrap();
        let (_, v) = m
            .iter()
            .find(|(k, _)| url.contains(k.as_str()))
            .ok_or_else(|| format!("{url}: connection refused"))?;
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }
}

fn setup_with(health: flowmesh_operator::health::Policy) -> (Arc<Context>, Fake) {
    let (client, fake) = Fake::start();
    let settings = Settings {
        health,
        ..Settings::default()
    };
    (Context::new(client, settings), fake)
}

/// A running pod of `segment` on node n1 (which the fake has, Ready).
fn put_pod(fake: &Fake, name: &str, segment: &str, extra: impl FnOnce(&mut Value)) {
    fake.put(
        "nodes",
        json!({"metadata": {"name": "n1", "namespace": ""},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"flowmesh.dev/flowgraph": "tone", "flowmesh.dev/segment": segment,
                                "app.kubernetes.io/managed-by": "flowmesh-operator"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "worker", "image": "flowmesh"}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:00:10Z"}],
                   "containerStatuses": [{"name": "worker", "image": "flowmesh", "imageID": "",
                                          "ready": true, "restartCount": 0,
                                          "state": {"running": {}}}]}
    });
    extra(&mut p);
    fake.put("pods", p);
}

fn crash_looping(p: &mut Value) {
    p["status"]["conditions"][0]["status"] = json!("False");
    p["status"]["containerStatuses"][0]["ready"] = json!(false);
    p["status"]["containerStatuses"][0]["restartCount"] = json!(4);
    p["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    p["status"]["containerStatuses"][0]["lastState"] =
        json!({"terminated": {"exitCode": 1, "reason": "Error", "message": "no such device"}});
}

fn events_since(fake: &Fake, mark: usize) -> Vec<(String, String)> {
    fake.writes_since(mark)
        .into_iter()
        .filter(|l| l.plural == "events")
        .map(|l| {
            let b = l.body.unwrap();
            (
                b["reason"].as_str().unwrap_or("").to_string(),
                b["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pod_deletes_since(fake: &Fake, mark: usize) -> Vec<String> {
    fake.writes_since(mark)
        .into_iter()
        .filter(|l| l.plural == "pods" && l.method == http::Method::DELETE)
        .map(|l| l.name.unwrap())
        .collect()
}

fn condition(fake: &Fake, ty: &str) -> Value {
    fake.get("flowgraphs", NS, "tone").unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap()
        .clone()
}

/// One round of the live loop over the stored FlowGraph.
async fn poll(ctx: &Arc<Context>, fake: &Fake, probe: &Arc<Scripted>) {
    use kube::runtime::reflector;
    let mut writer = reflector::store::Writer::<DynamicObject>::new(
        flowmesh_operator::reconcile::flowgraph_resource(),
    );
    let store = writer.as_reader();
    let obj: DynamicObject =
        serde_json::from_value(fake.get("flowgraphs", NS, "tone").unwrap()).unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
    let p: Arc<dyn flowmesh_operator::live::Probe> = Arc::new(ScriptedProbe(probe.clone()));
    flowmesh_operator::live::poll_once(ctx, p, &[store]).await;
    // The reconcile that follows reads at a later millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

#[tokio::test]
async fn a_crash_looping_pod_is_replaced_with_an_event_and_a_restart_count() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    put_pod(&fake, "tone-back-1", "back", crash_looping);
    put_pod(&fake, "tone-front-1", "front", |_| {});
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert_eq!(pod_deletes_since(&fake, mark), vec!["tone-back-1"]);
    assert!(fake.get("pods", NS, "tone-back-1").is_none());
    let ev = events_since(&fake, mark);
    let (_, note) = ev
        .iter()
        .find(|(r, _)| r == "SegmentReplaced")
        .unwrap_or_else(|| panic!("no SegmentReplaced in {ev:?}"));
    assert!(
        note.contains(
            "segment back: pod tone-back-1 in CrashLoopBackOff after 4 restarts: no such device"
        ),
        "{note}"
    );
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["segments"]["back"]["replacements"], 1, "{st:#}");
    assert!(st["segments"]["back"]["lastFailure"]
        .as_str()
        .unwrap()
        .contains("CrashLoopBackOff"));
    assert!(st["segments"]["back"]["nextAttemptAfter"].is_string());
    assert!(st["segments"]["front"].get("replacements").is_none());
    let deg = condition(&fake, "Degraded");
    assert_eq!(deg["status"], "True");
    assert!(
        deg["message"]
            .as_str()
            .unwrap()
            .contains("back: pod tone-back-1"),
        "{deg}"
    );
    // Its replacement crash-loops too: within the backoff nothing is
    // deleted.
    put_pod(&fake, "tone-back-2", "back", crash_looping);
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert!(pod_deletes_since(&fake, mark).is_empty());
}

#[tokio::test]
async fn a_pod_on_a_lost_node_is_deleted_with_no_grace_period() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    put_pod(&fake, "tone-back-1", "back", |_| {});
    fake.edit("nodes", "", "n1", |n| {
        n["status"]["conditions"][0]["status"] = json!("Unknown");
    });
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let del = fake
        .writes_since(mark)
        .into_iter()
        .find(|l| l.plural == "pods" && l.method == http::Method::DELETE)
        .expect("the pod is deleted");
    assert_eq!(del.name.as_deref(), Some("tone-back-1"));
    assert_eq!(del.body.unwrap()["gracePeriodSeconds"], 0);
}

#[tokio::test]
async fn a_stalled_worker_is_replaced_and_degraded_clears_when_its_counters_move() {
    // Stalled once its counters stay still for a second.
    let (ctx, fake) = setup_with(flowmesh_operator::health::Policy {
        stall_seconds: 1.0,
        ..Default::default()
    });
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    put_pod(&fake, "tone-front-1", "front", |_| {});
    put_pod(&fake, "tone-back-1", "back", |_| {});
    let probe = Arc::new(Scripted::default());
    // The front segment's output edge holds 100 unacknowledged items; the
    // back worker's counters do not move.
    probe.set("tone-front", 1000, &[("gain.out>back", 100, 0, 0.0, 0)]);
    probe.set("tone-back", 500, &[]);
    poll(&ctx, &fake, &probe).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The front keeps moving; the back does not.
    probe.set("tone-front", 2000, &[("gain.out>back", 100, 0, 0.0, 0)]);
    poll(&ctx, &fake, &probe).await;
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert_eq!(pod_deletes_since(&fake, mark), vec!["tone-back-1"]);
    let ev = events_since(&fake, mark);
    assert!(
        ev.iter()
            .any(|(r, n)| r == "SegmentReplaced" && n.contains("stalled")),
        "{ev:?}"
    );
    assert_eq!(condition(&fake, "Degraded")["status"], "True");
    // The new pod: its worker reports progress.
    put_pod(&fake, "tone-back-2", "back", |_| {});
    probe.set("tone-back", 10, &[]);
    probe.set("tone-front", 3000, &[("gain.out>back", 100, 0, 0.0, 0)]);
    poll(&ctx, &fake, &probe).await;
    probe.set("tone-back", 20, &[]);
    probe.set("tone-front", 4000, &[("gain.out>back", 100, 0, 0.0, 0)]);
    poll(&ctx, &fake, &probe).await;
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert!(pod_deletes_since(&fake, mark).is_empty());
    let ev = events_since(&fake, mark);
    assert!(ev.iter().any(|(r, _)| r == "SegmentRecovered"), "{ev:?}");
    let deg = condition(&fake, "Degraded");
    assert_eq!(deg["status"], "False", "{deg}");
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["segments"]["back"]["replacements"], 1);
    assert!(st["segments"]["back"].get("downSince").is_none(), "{st:#}");
    assert!(st["segments"]["back"].get("attempts").is_none(), "{st:#}");
}

#[tokio::test]
async fn a_spent_restart_budget_gives_up_with_an_event_and_deletes_no_more() {
    let (ctx, fake) = setup_with(flowmesh_operator::health::Policy {
        budget: 1,
        ..Default::default()
    });
    fake.put("flowgraphs", flowgraph("0.5", 1000, true));
    run(&ctx, &fake).await;
    put_pod(&fake, "tone-back-1", "back", crash_looping);
    run(&ctx, &fake).await;
    assert!(fake.get("pods", NS, "tone-back-1").is_none());
    put_pod(&fake, "tone-back-2", "back", crash_looping);
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert!(pod_deletes_since(&fake, mark).is_empty());
    let ev = events_since(&fake, mark);
    let (_, note) = ev
        .iter()
        .find(|(r, _)| r == "RestartBudgetSpent")
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(note.contains("restart budget 1 spent"), "{note}");
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["segments"]["back"]["gaveUp"], true);
    assert_eq!(condition(&fake, "Degraded")["status"], "True");
    // Again: no delete, no second Event.
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert!(pod_deletes_since(&fake, mark).is_empty());
    assert!(events_since(&fake, mark)
        .iter()
        .all(|(r, _)| r != "RestartBudgetSpent"));
}

/// A message graph whose `back` segment is scalable.
fn scalable(hpa: bool) -> Value {
    let mut scaling = json!({"min": 1, "max": 4, "cooldownSeconds": 600, "lookbackSeconds": 600});
    if hpa {
        scaling["hpa"] = json!({"targetCPUUtilization": 70});
    }
    json!({
        "apiVersion": "flowmesh.dev/v1alpha1",
        "kind": "FlowGraph",
        "metadata": {"name": "tone", "namespace": NS, "uid": "fg-uid-1", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {
            "blocks": {
                "src": {"kind": "message_strobe", "segment": "front"},
                "dbg": {"kind": "message_debug", "segment": "back"}
            },
            "connections": [["src.out", "dbg.in"]],
            "segments": {"back": {"scaling": scaling}}
        }
    })
}

#[tokio::test]
async fn the_autoscaler_sets_replicas_from_the_backlog_and_reports_them() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", scalable(false));
    run(&ctx, &fake).await;
    let d = fake.get("deployments", NS, "tone-back").unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        60
    );
    assert!(fake.all("horizontalpodautoscalers").is_empty());
    // The producer holds 500 messages; one replica acknowledges 10/s:
    // 500 / (10 × 5 s) wants 10 replicas, up by at most 2.
    let probe = Arc::new(Scripted::default());
    probe.set("tone-front", 100, &[("src.out>back", 480, 20, 10.0, 1)]);
    probe.set("tone-back", 100, &[]);
    put_pod(&fake, "tone-front-1", "front", |_| {});
    put_pod(&fake, "tone-back-1", "back", |_| {});
    poll(&ctx, &fake, &probe).await;
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    let d = fake.get("deployments", NS, "tone-back").unwrap();
    assert_eq!(
        d["spec"]["replicas"],
        3,
        "{:#}",
        fake.get("flowgraphs", NS, "tone").unwrap()["status"]
    );
    let ev = events_since(&fake, mark);
    assert!(
        ev.iter()
            .any(|(r, n)| r == "Scaled" && n.contains("up from 1 to 3")),
        "{ev:?}"
    );
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    let b = &st["segments"]["back"];
    assert_eq!(b["desiredReplicas"], 3, "{st:#}");
    // Current: what the Deployment had when the decision was made.
    assert_eq!(b["replicas"], 1);
    assert_eq!(b["backlog"], 500);
    assert!(b["lastScaleTime"].is_string());
    // Within the cooldown (kept in the status): it holds at 3.
    let mark = fake.log_len();
    run(&ctx, &fake).await;
    assert_eq!(
        fake.get("deployments", NS, "tone-back").unwrap()["spec"]["replicas"],
        3
    );
    assert!(events_since(&fake, mark).iter().all(|(r, _)| r != "Scaled"));
    let typed: flowmesh_k8s::FlowGraphStatus =
        serde_json::from_value(fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone())
            .unwrap();
    assert_eq!(typed.segments["back"].desired_replicas, Some(3));
}

#[tokio::test]
async fn with_scaling_hpa_an_hpa_is_emitted_and_replicas_are_left_to_it() {
    let (ctx, fake) = setup();
    fake.put("flowgraphs", scalable(true));
    run(&ctx, &fake).await;
    let h = fake
        .get("horizontalpodautoscalers", NS, "tone-back")
        .expect("an HPA");
    assert_eq!(h["apiVersion"], "autoscaling/v2");
    assert_eq!(h["spec"]["scaleTargetRef"]["name"], "tone-back");
    assert_eq!(h["spec"]["minReplicas"], 1);
    assert_eq!(h["spec"]["maxReplicas"], 4);
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let d = fake.get("deployments", NS, "tone-back").unwrap();
    assert!(d["spec"].get("replicas").is_none(), "{d:#}");
    assert_eq!(
        fake.get("deployments", NS, "tone-front").unwrap()["spec"]["replicas"],
        1
    );
    let st = fake.get("flowgraphs", NS, "tone").unwrap()["status"].clone();
    assert_eq!(st["segments"]["back"]["scaleReason"], "hpa");
    // Back to the operator's autoscaler: the HPA is deleted.
    edit(&fake, scalable(false));
    run(&ctx, &fake).await;
    assert!(fake
        .get("horizontalpodautoscalers", NS, "tone-back")
        .is_none());
}
