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

#[test]
fn installed_from_deploy_the_survey_runs_end_to_end() {
    if !cluster_configured("installed_from_deploy_the_survey_runs_end_to_end") {
        return;
    }
    let t = Tools::get();
    let mut timings = Timings(vec![]);
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
    wait_operator(&t);
    timings.record("operator installed (deploy/)", t0.elapsed());
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
