//! Helpers of the end-to-end suite (`tests/e2e/cluster.rs`): `kubectl` and
//! `helm` from `scripts/k8s-tools` (or `$KUBECTL`, `$HELM`), run against the
//! cluster `KUBECONFIG` names, with deadlines and timings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// True when a cluster is configured; otherwise prints why the test is
/// skipped.
pub fn cluster_configured(test: &str) -> bool {
    if std::env::var_os("KUBECONFIG").is_some() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: KUBECONFIG is not set. The end-to-end suite needs a Kubernetes \
         cluster that can run the image in FLOWMESH_IMAGE (see docs/testing.md, \"End-to-end \
         suite\")."
    );
    false
}

/// kubectl and helm.
pub struct Tools {
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

impl Tools {
    /// `$KUBECTL`/`$HELM`, else the pinned binaries `scripts/k8s-tools`
    /// installs.
    pub fn get() -> Tools {
        let dir = || {
            let out = Command::new(repo().join("scripts/k8s-tools"))
                .output()
                .expect("scripts/k8s-tools runs");
            assert!(
                out.status.success(),
                "scripts/k8s-tools: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        let (k, h) = (std::env::var_os("KUBECTL"), std::env::var_os("HELM"));
        let d = if k.is_none() || h.is_none() {
            Some(dir())
        } else {
            None
        };
        Tools {
            kubectl: k
                .map(PathBuf::from)
                .unwrap_or_else(|| d.clone().unwrap().join("kubectl")),
            helm: h
                .map(PathBuf::from)
                .unwrap_or_else(|| d.clone().unwrap().join("helm")),
        }
    }

    fn run(&self, bin: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(bin)
            .args(args)
            .current_dir(repo())
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} {} failed ({}): {}{}",
                bin.file_name().unwrap().to_string_lossy(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.run(&self.kubectl, args)
    }

    pub fn k(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl … -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).expect("kubectl prints JSON")
    }

    pub fn helm(&self, args: &[&str]) -> String {
        self.run(&self.helm, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Applies a manifest given as text.
    pub fn apply_text(&self, ns: &str, text: &str) {
        let f = std::env::temp_dir().join(format!("fm-e2e-{}.yaml", std::process::id()));
        std::fs::write(&f, text).unwrap();
        self.k(&["apply", "-n", ns, "-f", f.to_str().unwrap()]);
        let _ = std::fs::remove_file(f);
    }
}

/// Polls `f` every 500 ms until it returns `Some`, or panics naming `what`
/// after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The image under test: `$FLOWMESH_IMAGE`, else `flowmesh:<version>`.
pub fn image() -> String {
    std::env::var("FLOWMESH_IMAGE")
        .unwrap_or_else(|_| format!("flowmesh:{}", env!("CARGO_PKG_VERSION")))
}

/// A control-plane timing, printed as the suite goes and at the end.
pub struct Timings(pub Vec<(String, Duration)>);

impl Timings {
    pub fn record(&mut self, what: &str, d: Duration) {
        eprintln!("timing: {what}: {:.1} s", d.as_secs_f64());
        self.0.push((what.to_string(), d));
    }
    pub fn print(&self) {
        eprintln!("control-plane timings:");
        for (w, d) in &self.0 {
            eprintln!("  {w:<40} {:>7.1} s", d.as_secs_f64());
        }
    }
}
