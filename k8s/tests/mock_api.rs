//! Reading and watching a FlowGraph against a mocked API server: kube's
//! `Client` over a `tower-test` mock service, answered request by request.

use std::time::Duration;

use flowmesh_k8s::source::{fetch, watch, Error, Event, ResourceRef};
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "radio"), handle)
}

fn tone() -> ResourceRef {
    ResourceRef {
        namespace: "radio".into(),
        name: "tone".into(),
    }
}

fn object(gain: &str, generation: i64, rv: &str) -> Value {
    json!({
        "apiVersion": "flowmesh.dev/v1alpha1",
        "kind": "FlowGraph",
        "metadata": {"name": "tone", "namespace": "radio", "generation": generation,
                     "resourceVersion": rv, "uid": "0b9c5f4e-1"},
        "spec": {
            "blocks": {
                "src": {"kind": "signal_source", "params": {"type": "cf32", "samp_rate": 1e6}},
                "gain": {"kind": "multiply_const", "params": {"type": "cf32", "constant": gain}},
                "head": {"kind": "head", "params": {"type": "cf32", "n": 1000}},
                "sink": {"kind": "null_sink", "params": {"type": "cf32"}}
            },
            "connections": [["src.out", "gain.in"], ["gain.out", "head.in"], ["head.out", "sink.in"]]
        }
    })
}

fn respond(
    send: tower_test::mock::SendResponse<Response<Body>>,
    status: StatusCode,
    body: Vec<u8>,
) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(body))
            .unwrap(),
    );
}

async fn next(
    handle: &mut Handle,
) -> (
    Request<Body>,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is alive")
}

#[tokio::test]
async fn fetch_gets_the_flowgraph_and_validates_its_spec() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = next(&mut handle).await;
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/flowmesh.dev/v1alpha1/namespaces/radio/flowgraphs/tone"
        );
        respond(
            send,
            StatusCode::OK,
            serde_json::to_vec(&object("0.5", 3, "41")).unwrap(),
        );
    });
    let f = fetch(&client, &tone()).await.unwrap();
    server.await.unwrap();
    assert_eq!(f.generation, 3);
    assert_eq!(f.resource_version, "41");
    assert_eq!(f.doc.metadata.name, "tone");
    assert_eq!(f.doc.spec.blocks["gain"].params["constant"], json!("0.5"));
}

#[tokio::test]
async fn an_invalid_spec_is_reported_like_flowmesh_validate_does() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        let mut o = object("0.5", 1, "1");
        o["spec"]["blocks"]["gain"]["kind"] = json!("multiply_konst");
        o["spec"]["blocks"]["head"]["params"]["n"] = json!(-5);
        respond(send, StatusCode::OK, serde_json::to_vec(&o).unwrap());
    });
    let e = fetch(&client, &tone()).await.unwrap_err();
    server.await.unwrap();
    let Error::Invalid { report, text, .. } = &e else {
        panic!("{e}")
    };
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path == "spec.blocks.gain.kind"),
        "{text}"
    );
    assert!(
        text.contains("multiply_const"),
        "the hint names the kind meant: {text}"
    );
    assert!(
        e.to_string().starts_with("FlowGraph radio/tone is invalid"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_flowgraph_says_how_to_create_it() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "flowgraphs.flowmesh.dev \"tone\" not found", "reason": "NotFound", "code": 404});
        respond(
            send,
            StatusCode::NOT_FOUND,
            serde_json::to_vec(&status).unwrap(),
        );
    });
    let e = fetch(&client, &tone()).await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(e.to_string().contains("kubectl apply"), "{e}");
}

/// Answers the watcher's list (one object, or none) and then its watch
/// request with `events` (newline-delimited JSON watch events).
async fn serve_list_then_watch(handle: &mut Handle, listed: Option<Value>, events: Vec<Value>) {
    let (req, send) = next(handle).await;
    let q = req.uri().query().unwrap_or("").to_string();
    assert!(!q.contains("watch=true"), "a list first: {q}");
    assert!(q.contains("fieldSelector=metadata.name%3Dtone"), "{q}");
    let items: Vec<Value> = listed.into_iter().collect();
    let list = json!({"apiVersion": "flowmesh.dev/v1alpha1", "kind": "FlowGraphList",
                      "metadata": {"resourceVersion": "50"}, "items": items});
    respond(send, StatusCode::OK, serde_json::to_vec(&list).unwrap());
    let (req, send) = next(handle).await;
    let q = req.uri().query().unwrap_or("").to_string();
    assert!(
        q.contains("watch=true") && q.contains("resourceVersion=50"),
        "{q}"
    );
    let mut body = vec![];
    for e in events {
        body.extend(serde_json::to_vec(&e).unwrap());
        body.push(b'\n');
    }
    respond(send, StatusCode::OK, body);
}

#[tokio::test]
async fn watch_reports_the_object_its_changes_and_its_deletion() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let mut bad = object("0.5", 3, "52");
        bad["spec"]["connections"] = json!([["src.out", "nowhere.in"]]);
        serve_list_then_watch(
            &mut handle,
            Some(object("0.5", 1, "49")),
            vec![
                json!({"type": "MODIFIED", "object": object("0.25", 2, "51")}),
                json!({"type": "MODIFIED", "object": bad}),
                json!({"type": "DELETED", "object": object("0.25", 2, "53")}),
            ],
        )
        .await;
        handle
    });
    let events = Box::pin(watch(client, tone()));
    let mut events = events;
    async fn next_event(s: &mut (impl futures::Stream<Item = Event> + Unpin)) -> Event {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
    }
    let gain = |e: Event| match e {
        Event::Applied(f) => f.unwrap().doc.spec.blocks["gain"].params["constant"].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(gain(next_event(&mut events).await), json!("0.5"));
    assert_eq!(gain(next_event(&mut events).await), json!("0.25"));
    match next_event(&mut events).await {
        Event::Applied(f) => assert!(matches!(*f, Err(Error::Invalid { .. }))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next_event(&mut events).await, Event::Deleted));
    drop(server);
}

#[tokio::test]
async fn a_flowgraph_gone_when_the_watch_starts_is_deleted() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        serve_list_then_watch(&mut handle, None, vec![]).await;
        handle
    });
    let mut events = Box::pin(watch(client, tone()));
    let e = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(e, Event::Deleted), "{e:?}");
    drop(server);
}
