//! A small in-memory Kubernetes API server behind kube's `Client` (a
//! `tower-test` mock service answered by a task): enough of GET, LIST
//! (label selectors), server-side apply, merge patch of `/status`, POST and
//! DELETE for the operator's reconcile to run against, with a log of every
//! request so tests can count the writes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// (resource plural, namespace, name).
pub type Key = (String, String, String);

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub body: Option<Value>,
}

impl Logged {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

#[derive(Clone, Default)]
pub struct Fake {
    pub objects: Arc<Mutex<BTreeMap<Key, Value>>>,
    pub log: Arc<Mutex<Vec<Logged>>>,
    version: Arc<Mutex<u64>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

fn matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(|x| x.as_str())
            == Some(v)
    })
}

/// JSON merge patch (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl Fake {
    /// A client whose requests this fake answers.
    pub fn start() -> (Client, Fake) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = Fake::default();
        let f = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = f.handle(req).await;
                send.send_response(resp);
            }
        });
        (Client::new(service, "default"), fake)
    }

    pub fn put(&self, plural: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        self.objects
            .lock()
            .unwrap()
            .insert((plural.into(), ns, name), obj);
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(&(plural.into(), ns.into(), name.into()))
            .cloned()
    }

    /// Every object of a kind, by name.
    pub fn all(&self, plural: &str) -> BTreeMap<String, Value> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|((_, _, n), v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Edits a stored object in place.
    pub fn edit(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut o = self.objects.lock().unwrap();
        let v = o
            .get_mut(&(plural.into(), ns.into(), name.into()))
            .expect("the object exists");
        f(v);
    }

    /// The writes logged since `from` (an index into the log).
    pub fn writes_since(&self, from: usize) -> Vec<Logged> {
        self.log.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.is_write())
            .cloned()
            .collect()
    }

    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn next_version(&self) -> String {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        v.to_string()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        let path: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        // /api/v1/namespaces/NS/PLURAL[/NAME[/SUB]] or
        // /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME[/SUB]]
        let rest = match path.first() {
            Some(&"api") => &path[2..],
            Some(&"apis") => &path[3..],
            _ => return status(StatusCode::NOT_FOUND, "NotFound", "no such path"),
        };
        let (ns, plural, name, sub) = match rest {
            ["namespaces", ns, plural] => (*ns, *plural, None, None),
            ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (*ns, *plural, Some(*name), Some(*sub)),
            [plural] => ("", *plural, None, None),
            _ => return status(StatusCode::NOT_FOUND, "NotFound", "no such path"),
        };
        self.log.lock().unwrap().push(Logged {
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            plural: plural.to_string(),
            name: name.map(String::from),
            subresource: sub.map(String::from),
            body: body.clone(),
        });
        let q = query(&parts.uri);
        let key = |n: &str| (plural.to_string(), ns.to_string(), n.to_string());
        let mut objects = self.objects.lock().unwrap();
        match (parts.method.clone(), name) {
            (Method::GET, Some(n)) => match objects.get(&key(n)) {
                Some(o) => ok(o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{plural} {n} not found"),
                ),
            },
            (Method::GET, None) => {
                let sel = q.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|((p, o_ns, _), o)| {
                        p == plural && (ns.is_empty() || o_ns == ns) && matches(o, &sel)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                ok(&json!({"kind": "List", "apiVersion": "v1",
                           "metadata": {"resourceVersion": self.next_version()}, "items": items}))
            }
            (Method::POST, None) => {
                let mut o = body.unwrap_or(Value::Null);
                let n = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                if plural == "events" {
                    return ok(&o);
                }
                if objects.contains_key(&key(&n)) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{plural} {n} exists"),
                    );
                }
                o["metadata"]["namespace"] = json!(ns);
                o["metadata"]["uid"] = json!(format!("uid-{n}"));
                // A Secret's stringData is stored as base64 data.
                if let Some(sd) = o.as_object_mut().unwrap().remove("stringData") {
                    use base64::Engine;
                    let data: serde_json::Map<String, Value> = sd
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let b = base64::engine::general_purpose::STANDARD
                                .encode(v.as_str().unwrap_or("").as_bytes());
                            (k.clone(), json!(b))
                        })
                        .collect();
                    o["data"] = Value::Object(data);
                }
                o["metadata"]["resourceVersion"] = json!(self.next_version());
                objects.insert(key(&n), o.clone());
                ok(&o)
            }
            (Method::PATCH, Some(n)) => {
                let ct = parts
                    .headers
                    .get("content-type")
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or("");
                let patch = body.unwrap_or(Value::Null);
                if ct.starts_with("application/apply-patch") {
                    // Server-side apply: the applied configuration becomes
                    // the object (one field manager here), keeping identity
                    // and status.
                    let old = objects.get(&key(n)).cloned();
                    let mut o = patch;
                    o["metadata"]["namespace"] = json!(ns);
                    let generation = match &old {
                        Some(old) => {
                            o["metadata"]["uid"] = old["metadata"]["uid"].clone();
                            if let Some(s) = old.get("status") {
                                o["status"] = s.clone();
                            }
                            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                            if old.get("spec") != o.get("spec") {
                                g + 1
                            } else {
                                g
                            }
                        }
                        None => {
                            o["metadata"]["uid"] = json!(format!("uid-{n}"));
                            1
                        }
                    };
                    o["metadata"]["generation"] = json!(generation);
                    o["metadata"]["resourceVersion"] = json!(self.next_version());
                    objects.insert(key(n), o.clone());
                    ok(&o)
                } else {
                    let Some(o) = objects.get_mut(&key(n)) else {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            &format!("{plural} {n} not found"),
                        );
                    };
                    match sub {
                        Some("status") => {
                            let s = patch.get("status").cloned().unwrap_or(Value::Null);
                            merge(
                                o.as_object_mut()
                                    .unwrap()
                                    .entry("status")
                                    .or_insert(Value::Null),
                                &s,
                            );
                        }
                        _ => merge(o, &patch),
                    }
                    o["metadata"]["resourceVersion"] = json!(self.next_version());
                    ok(o)
                }
            }
            (Method::DELETE, Some(n)) => match objects.remove(&key(n)) {
                Some(o) => ok(&o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{plural} {n} not found"),
                ),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not in the fake",
            ),
        }
    }
}
