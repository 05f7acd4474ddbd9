//! The end-to-end suite against a real Kubernetes cluster. It runs when
//! `KUBECONFIG` is set and is skipped (saying so) otherwise, so the default
//! test command never needs a cluster. It is written for any conformant
//! cluster; the nodes must be able to run `FLOWMESH_IMAGE` (default
//! `flowmesh:<version>`: build it with `scripts/image` and load it, e.g.
//! `kind load docker-image flowmesh:0.1.0`, or push it and set
//! `FLOWMESH_IMAGE`). docs/testing.md, "End-to-end suite".
//!
//! Each install path is one test: the operator from `deploy/` (an overlay
//! sets the image), and from the Helm chart. Both then run the same
//! scenario on `examples/k8s/spectrum-survey.yaml` in a fresh namespace:
//! Ready, detector events from the events segment, a settable parameter
//! changed live (no pod restarted), a non-settable one rolling only its
//! segment, a deleted worker pod and the stream flowing again, and the
//! FlowGraph deleted with nothing left. The control-plane timings are
//! printed: apply → children created, apply → first event, pod deleted →
//! flowing again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowmesh_e2e::{cluster_configured, image, repo, wait_for, Timings, Tools};
use serde_json::Value;

const FG: &str = "spectrum-survey";
const OPERATOR_NS: &str = "flowmesh-system";

/// Pod name → uid of a FlowGraph's worker pods, by segment.
fn pods(t: &Tools, ns: &str) -> BTreeMap<String, (String, String)> {
    let v = t.json(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        &format!("flowmesh.dev/flowgraph={FG}"),
    ]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["labels"]["flowmesh.dev/segment"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn condition(fg: &Value, ty: &str) -> Option<String> {
    fg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .and_then(|c| c["status"].as_str().map(String::from))
}

/// The detector events the events segment printed so far.
fn events(t: &Tools, ns: &str) -> Vec<Value> {
    let out = t
        .kubectl(&[
            "logs",
            "-n",
            ns,
            "-l",
            &format!("flowmesh.dev/flowgraph={FG},flowmesh.dev/segment=events"),
            "--tail=-1",
        ])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// `flowmesh get` inside a segment's pod (the image has no shell).
fn worker_get(t: &Tools, ns: &str, pod: &str, block: &str, param: &str) -> Result<String, String> {
    t.kubectl(&[
        "exec",
        "-n",
        ns,
        pod,
        "--",
        "flowmesh",
        "get",
        "--worker",
        "http://127.0.0.1:9400",
        "--token-file",
        "/var/run/flowmesh/token/token",
        block,
        param,
    ])
}

/// The survey scenario in namespace `ns`, with an installed operator.
fn scenario(t: &Tools, ns: &str, timings: &mut Timings) {
    let _ = t.kubectl(&["delete", "namespace", ns, "--wait=true"]);
    t.k(&["create", "namespace", ns]);
    let survey = std::fs::read_to_string(repo().join("examples/k8s/spectrum-survey.yaml")).unwrap();

    // Apply → children created → Ready → first event.
    let t0 = Instant::now();
    t.apply_text(ns, &survey);
    wait_for(
        "the three segment Deployments",
        Duration::from_secs(60),
        || {
            let v = t.json(&[
                "get",
                "deployments",
                "-n",
                ns,
                "-l",
                &format!("flowmesh.dev/flowgraph={FG}"),
            ]);
            (v["items"].as_array().unwrap().len() == 3).then_some(())
        },
    );
    timings.record("apply → children created", t0.elapsed());
    wait_for("FlowGraph Ready=True", Duration::from_secs(300), || {
        let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
        (condition(&fg, "Ready").as_deref() == Some("True")).then_some(())
    });
    timings.record("apply → Ready", t0.elapsed());
    wait_for(
        "a detector event from the events segment",
        Duration::from_secs(180),
        || (!events(t, ns).is_empty()).then_some(()),
    );
    timings.record("apply → first event", t0.elapsed());
    let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
    assert_eq!(fg["status"]["phase"], "Running", "{:#}", fg["status"]);
    assert_eq!(fg["status"]["ready"], "3/3");
    assert_eq!(
        fg["status"]["observedGeneration"],
        fg["metadata"]["generation"]
    );

    // A settable parameter: applied live, no pod restarted.
    let before = pods(t, ns);
    t.k(&[
        "patch",
        "flowgraph",
        FG,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"blocks":{"detector":{"params":{"threshold":12}}}}}"#,
    ]);
    let detector_pod = before["detector"].0.clone();
    let answer = wait_for(
        "threshold 12 in force in the detector worker",
        Duration::from_secs(60),
        || {
            worker_get(t, ns, &detector_pod, "detector", "threshold")
                .ok()
                .filter(|a| a.contains("12"))
        },
    );
    eprintln!("detector threshold now: {}", answer.trim());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pods(t, ns), before, "a settable change restarted a pod");

    // A non-settable parameter of the detector segment: only it rolls.
    t.k(&[
        "patch",
        "flowgraph",
        FG,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"blocks":{"detector":{"params":{"center_freq":100000000}}}}}"#,
    ]);
    let after = wait_for(
        "the detector segment rolled",
        Duration::from_secs(180),
        || {
            let now = pods(t, ns);
            (now.get("detector").map(|p| &p.1) != Some(&before["detector"].1) && now.len() == 3)
                .then_some(now)
        },
    );
    assert_eq!(after["frontend"], before["frontend"], "frontend rolled too");
    assert_eq!(after["events"], before["events"], "events rolled too");
    wait_for(
        "Ready again after the roll",
        Duration::from_secs(180),
        || {
            let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
            (condition(&fg, "Ready").as_deref() == Some("True")).then_some(())
        },
    );

    // A deleted worker pod: its Deployment replaces it and the stream
    // flows again (events keep arriving).
    let seen = events(t, ns).len();
    let t1 = Instant::now();
    t.k(&[
        "delete",
        "pod",
        "-n",
        ns,
        &after["frontend"].0,
        "--wait=false",
    ]);
    wait_for(
        "events after the frontend pod was deleted",
        Duration::from_secs(300),
        || (events(t, ns).len() > seen).then_some(()),
    );
    timings.record("pod deleted → flowing again", t1.elapsed());

    // Deleted: nothing of it is left.
    t.k(&["delete", "flowgraph", FG, "-n", ns, "--wait=true"]);
    wait_for("every child gone", Duration::from_secs(120), || {
        let sel = format!("flowmesh.dev/flowgraph={FG}");
        let left = t.k(&[
            "get",
            "deployments,services,secrets,serviceaccounts,roles,rolebindings,pods",
            "-n",
            ns,
            "-l",
            &sel,
            "-o",
            "name",
        ]);
        left.trim().is_empty().then_some(())
    });
    t.k(&["delete", "namespace", ns, "--wait=false"]);
}

fn wait_operator(t: &Tools) {
    t.k(&[
        "rollout",
        "status",
        "-n",
        OPERATOR_NS,
        "deployment",
        "-l",
        "app.kubernetes.io/name=flowmesh,app.kubernetes.io/component=operator",
        "--timeout=180s",
    ]);
}

/// Installs the operator from deploy/ with an overlay that sets the image
/// under test; returns the overlay's directory (to delete it with).
fn install_from_deploy(t: &Tools, timings: &mut Timings) -> std::path::PathBuf {
    // An overlay on deploy/ that sets the image under test.
    let dir = std::env::temp_dir().join(format!("fm-e2e-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = image();
    let (name, tag) = img.rsplit_once(':').unwrap_or((&img, "latest"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources: [{}]\nimages: [{{name: flowmesh, newName: {name}, newTag: \"{tag}\"}}]\n\
             patches:\n- target: {{kind: Deployment, name: flowmesh-operator}}\n  patch: |-\n    \
             - op: add\n      path: /spec/template/spec/containers/0/args/-\n      value: --worker-image={img}\n",
            repo().join("deploy").display()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    t.k(&["apply", "--server-side", "-k", dir.to_str().unwrap()]);
    wait_operator(t);
    timings.record("operator installed (deploy/)", t0.elapsed());
    dir
}

#[test]
fn installed_from_deploy_the_survey_runs_end_to_end() {
    if !cluster_configured("installed_from_deploy_the_survey_runs_end_to_end") {
        return;
    }
    let t = Tools::get();
    let mut timings = Timings(vec![]);
    let dir = install_from_deploy(&t, &mut timings);
    scenario(&t, "flowmesh-e2e-deploy", &mut timings);
    let _ = t.kubectl(&["delete", "-k", dir.to_str().unwrap(), "--wait=true"]);
    timings.print();
}

#[test]
fn installed_from_the_chart_the_survey_runs_end_to_end() {
    if !cluster_configured("installed_from_the_chart_the_survey_runs_end_to_end") {
        return;
    }
    let t = Tools::get();
    let mut timings = Timings(vec![]);
    let img = image();
    let (name, tag) = img.rsplit_once(':').unwrap_or((&img, "latest"));
    let t0 = Instant::now();
    t.helm(&[
        "upgrade",
        "--install",
        "flowmesh",
        "helm/flowmesh",
        "-n",
        OPERATOR_NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
        "--set",
        &format!("image.repository={name}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        &format!("workerImage={img}"),
    ]);
    wait_operator(&t);
    timings.record("operator installed (helm)", t0.elapsed());
    scenario(&t, "flowmesh-e2e-helm", &mut timings);
    t.helm(&["uninstall", "flowmesh", "-n", OPERATOR_NS, "--wait"]);
    timings.print();
}

/// A fresh namespace with the survey applied (`text`), once it is Ready and
/// the events segment has printed a detection.
fn survey_running(t: &Tools, ns: &str, text: &str, timings: &mut Timings) {
    let _ = t.kubectl(&["delete", "namespace", ns, "--wait=true"]);
    t.k(&["create", "namespace", ns]);
    let t0 = Instant::now();
    t.apply_text(ns, text);
    wait_for("FlowGraph Ready=True", Duration::from_secs(300), || {
        let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
        (condition(&fg, "Ready").as_deref() == Some("True")).then_some(())
    });
    wait_for(
        "a detector event from the events segment",
        Duration::from_secs(180),
        || (!events(t, ns).is_empty()).then_some(()),
    );
    timings.record("apply → first event", t0.elapsed());
}

fn remove_survey(t: &Tools, ns: &str) {
    let _ = t.kubectl(&["delete", "flowgraph", FG, "-n", ns, "--wait=true"]);
    let _ = t.kubectl(&["delete", "namespace", ns, "--wait=false"]);
}

/// The health watcher (docs/operator.md, "Health"): a deleted segment pod
/// is replaced, the data flows again, and the FlowGraph is not degraded
/// once it does; the detector segment's pod is deleted (its neighbours
/// reconnect and resume under the network-edge rules).
#[test]
fn a_deleted_segment_pod_is_replaced_and_the_data_flows_again() {
    if !cluster_configured("a_deleted_segment_pod_is_replaced_and_the_data_flows_again") {
        return;
    }
    let t = Tools::get();
    let mut timings = Timings(vec![]);
    let dir = install_from_deploy(&t, &mut timings);
    let ns = "flowmesh-e2e-health";
    let survey = std::fs::read_to_string(repo().join("examples/k8s/spectrum-survey.yaml")).unwrap();
    survey_running(&t, ns, &survey, &mut timings);
    let before = pods(&t, ns);
    let seen = events(&t, ns).len();
    let t1 = Instant::now();
    t.k(&[
        "delete",
        "pod",
        "-n",
        ns,
        &before["detector"].0,
        "--wait=false",
    ]);
    let replaced = wait_for("a new detector pod", Duration::from_secs(120), || {
        let now = pods(&t, ns);
        now.get("detector")
            .filter(|p| p.1 != before["detector"].1)
            .cloned()
    });
    timings.record("pod deleted → new pod", t1.elapsed());
    eprintln!(
        "detector pod {} replaced by {}",
        before["detector"].0, replaced.0
    );
    wait_for(
        "events after the detector pod was deleted",
        Duration::from_secs(300),
        || (events(&t, ns).len() > seen).then_some(()),
    );
    timings.record("pod deleted → flowing again", t1.elapsed());
    wait_for(
        "Degraded=False after the data flows again",
        Duration::from_secs(120),
        || {
            let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
            (condition(&fg, "Degraded").as_deref() == Some("False")
                && fg["status"]["segments"]["detector"]["downSince"].is_null())
            .then_some(fg)
        },
    );
    timings.record("pod deleted → Degraded=False", t1.elapsed());
    remove_survey(&t, ns);
    let _ = t.kubectl(&["delete", "-k", dir.to_str().unwrap(), "--wait=true"]);
    timings.print();
}

/// The survey with a scalable segment: the example's own if it declares
/// one (`scaling`), else its events segment made scalable (it consumes the
/// detector's message edge). Returns the text and the segment.
fn scalable_survey() -> (String, String) {
    let text = std::fs::read_to_string(repo().join("examples/k8s/spectrum-survey.yaml")).unwrap();
    let mut seg = None;
    let mut current = None;
    let mut in_segments = false;
    for line in text.lines() {
        if line.starts_with("  segments:") {
            in_segments = true;
            continue;
        }
        if in_segments {
            if !line.starts_with("    ") && !line.trim().is_empty() {
                in_segments = false;
            } else if line.starts_with("    ") && !line.starts_with("     ") {
                current = line.trim().split(':').next().map(String::from);
            }
            if line.contains("scaling:") {
                seg = current.clone();
            }
        }
    }
    match seg {
        Some(s) => (text, s),
        None => {
            assert!(
                !text.contains("\n  segments:"),
                "examples/k8s/spectrum-survey.yaml has segments but none with scaling: \
                 give its analysis segment `scaling` (docs/operator.md, \"Autoscaling\")"
            );
            let mut t = text.trim_end().to_string();
            t.push_str(
                "\n  segments:\n    events:\n      scaling: {min: 1, max: 4, \
                 targetSecondsOfBacklog: 1, cooldownSeconds: 30, lookbackSeconds: 60}\n",
            );
            (t, "events".to_string())
        }
    }
}

fn set_threshold(t: &Tools, ns: &str, db: f64) {
    t.k(&[
        "patch",
        "flowgraph",
        FG,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"blocks":{{"detector":{{"params":{{"threshold":{db}}}}}}}}}}}"#),
    ]);
}

fn scaled(t: &Tools, ns: &str, seg: &str) -> (i64, i64, Value) {
    let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
    let s = fg["status"]["segments"][seg].clone();
    (
        s["desiredReplicas"].as_i64().unwrap_or(0),
        s["replicas"].as_i64().unwrap_or(0),
        s,
    )
}

/// The autoscaler (docs/operator.md, "Autoscaling"): the detector's
/// threshold lowered to 0 dB makes detections from the noise, the backlog
/// into the scalable segment grows and it scales up; raised to 40 dB there
/// are none and it scales back to its minimum. Prints the replicas as they
/// follow and the times.
#[test]
fn the_analysis_segment_scales_up_with_detections_and_back_down() {
    if !cluster_configured("the_analysis_segment_scales_up_with_detections_and_back_down") {
        return;
    }
    let t = Tools::get();
    let mut timings = Timings(vec![]);
    let dir = install_from_deploy(&t, &mut timings);
    let ns = "flowmesh-e2e-scaling";
    let (text, seg) = scalable_survey();
    survey_running(&t, ns, &text, &mut timings);
    let (_, start, _) = scaled(&t, ns, &seg);
    let t1 = Instant::now();
    set_threshold(&t, ns, 0.0);
    let up = wait_for(
        "the scalable segment to scale up",
        Duration::from_secs(600),
        || {
            let (desired, current, s) = scaled(&t, ns, &seg);
            eprintln!(
                "{:>5.0} s  desired {desired} current {current} backlog {} ({})",
                t1.elapsed().as_secs_f64(),
                s["backlog"],
                s["scaleReason"]
            );
            std::thread::sleep(Duration::from_secs(5));
            (current > start.max(1)).then_some(current)
        },
    );
    timings.record(&format!("more detections → {up} replicas"), t1.elapsed());
    let t2 = Instant::now();
    set_threshold(&t, ns, 40.0);
    wait_for(
        "the scalable segment back at its minimum",
        Duration::from_secs(900),
        || {
            let (desired, current, s) = scaled(&t, ns, &seg);
            eprintln!(
                "{:>5.0} s  desired {desired} current {current} backlog {} ({})",
                t2.elapsed().as_secs_f64(),
                s["backlog"],
                s["scaleReason"]
            );
            std::thread::sleep(Duration::from_secs(5));
            (current < up && desired == current).then_some(())
        },
    );
    timings.record("fewer detections → scaled down", t2.elapsed());
    // Nothing lost: no gap or loss on the scalable segment's input.
    let fg = t.json(&["get", "flowgraph", FG, "-n", ns]);
    assert!(
        fg["status"]["segments"][&seg]["itemsLost"]
            .as_object()
            .is_none_or(|m| m.values().all(|v| v.as_u64() == Some(0))),
        "{:#}",
        fg["status"]["segments"][&seg]
    );
    remove_survey(&t, ns);
    let _ = t.kubectl(&["delete", "-k", dir.to_str().unwrap(), "--wait=true"]);
    timings.print();
}
