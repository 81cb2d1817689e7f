//! The sandbox judged by real kubectl, with its defaults (strict validation, protobuf for
//! typed creates, SPDY-over-WebSocket port-forward), once per kubectl version a 1.33 API
//! server serves: 1.27 to 1.33 (`kubectl.1.NN` beside the `kubectl` on PATH). Each scenario
//! is one test per version (`kubectl_1_27::apply_client_side_server_side_and_dry_run`), with its
//! own sandbox, KUBECONFIG and discovery cache, so versions run in parallel and a failure names
//! its version.
//!
//! Without a version's binary its tests print a loud SKIP line and pass, unless
//! `KUBESTRAP_REQUIRE_KUBECTL=1` (CI), which turns a missing kubectl into a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kubestrap_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use kubestrap_test_support::{EchoBackend, kubectl_version_or_skip};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const T: Duration = Duration::from_secs(60);

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(bin: PathBuf, h: &SandboxHandle, dir: &Path) -> Self {
        Self {
            bin,
            kubeconfig: h.kubeconfig_path(),
            cache: dir.join("kubectl-cache"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.parent().unwrap_or(Path::new("/tmp")))
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl; returns stdout, panics with stderr on failure.
    async fn ok(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(T, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        no_degraded_client(args, &String::from_utf8_lossy(&out.stderr));
        stdout
    }

    /// Runs kubectl with `input` on stdin.
    async fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl spawns");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        drop(stdin);
        let out = tokio::time::timeout(T, child.wait_with_output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        no_degraded_client(args, &String::from_utf8_lossy(&out.stderr));
        stdout
    }

    async fn fails(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(T, self.command(args).output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl runs");
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A command that succeeded may still have worked around the server: client-go logs when
/// discovery or OpenAPI failed and kubectl warns when it fell back from the server's schema.
fn no_degraded_client(args: &[&str], stderr: &str) {
    for sign in [
        "error calculating patch from openapi spec",
        "failed to download openapi",
        "couldn't get resource list",
        "couldn't get current server API group list",
        "memcache.go",
    ] {
        assert!(
            !stderr.contains(sign),
            "kubectl {args:?} worked around the server ({sign:?}):\n{stderr}"
        );
    }
}

/// The minor version of a `kubectl.1.NN` binary.
fn minor_of(bin: &Path) -> String {
    bin.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('.').next())
        .unwrap_or("")
        .to_string()
}

async fn sandbox(dir: &Path) -> SandboxHandle {
    let mut c = SandboxConfig::new(dir.join("sandbox"));
    c.bookmark_interval = Duration::from_millis(500);
    tokio::time::timeout(T, Sandbox::start(c))
        .await
        .expect("start in time")
        .expect("sandbox starts")
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: apps
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: apps
data:
  mode: one
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
"#;

async fn version_get_describe_api_resources(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    let v = k.ok(&["version", "-o", "json"]).await;
    assert!(v.contains("\"gitVersion\": \"v1.33"), "{v}");
    let client: serde_json::Value = serde_json::from_str(&v).expect("version json");
    assert_eq!(
        client["clientVersion"]["minor"]
            .as_str()
            .map(|m| m.trim_end_matches('+')),
        Some(minor_of(&k.bin).as_str()),
        "the kubectl under test"
    );
    let ns = k.ok(&["get", "namespaces"]).await;
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "node/sandbox",
        "--timeout=30s",
    ])
    .await;
    let d = k.ok(&["describe", "node", "sandbox"]).await;
    assert!(d.contains("Ready"), "{d}");
    let can = k
        .ok(&["auth", "can-i", "create", "secrets", "-n", "vault"])
        .await;
    assert_eq!(can.trim(), "yes", "the admin kubeconfig is cluster-admin");
    let r = k.ok(&["api-resources"]).await;
    assert!(
        r.contains("deployments") && r.contains("customresourcedefinitions"),
        "{r}"
    );
    let cm = k
        .ok(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .await;
    assert!(cm.starts_with("-----BEGIN CERTIFICATE-----"));
    h.shutdown().await.expect("shutdown");
}

async fn create_commands_send_protobuf_and_work(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    k.ok(&["create", "namespace", "team"]).await;
    k.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
    ])
    .await;
    let data = k
        .ok(&[
            "-n",
            "team",
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.data.password}",
        ])
        .await;
    assert_eq!(data, "czNjcmV0");
    k.ok(&[
        "-n",
        "team",
        "create",
        "deployment",
        "api",
        "--image=nginx",
        "--replicas=2",
    ])
    .await;
    k.ok(&[
        "-n",
        "team",
        "wait",
        "--for=condition=Available",
        "deployment/api",
        "--timeout=30s",
    ])
    .await;
    let token = k
        .ok(&[
            "-n",
            "team",
            "create",
            "token",
            "default",
            "--audience=vault",
            "--duration=10m",
        ])
        .await;
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");
    k.ok(&[
        "-n",
        "team",
        "create",
        "job",
        "migrate",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ])
    .await;
    k.ok(&[
        "-n",
        "team",
        "wait",
        "--for=condition=Complete",
        "job/migrate",
        "--timeout=30s",
    ])
    .await;
    k.ok(&[
        "-n",
        "team",
        "create",
        "service",
        "clusterip",
        "api",
        "--tcp=80:8080",
    ])
    .await;
    let target = k
        .ok(&[
            "-n",
            "team",
            "get",
            "svc",
            "api",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}",
        ])
        .await;
    assert_eq!(target, "8080");
    k.ok(&[
        "create",
        "clusterrolebinding",
        "vault-auth",
        "--clusterrole=system:auth-delegator",
        "--serviceaccount=team:default",
    ])
    .await;
    let subject = k
        .ok(&[
            "get",
            "clusterrolebinding",
            "vault-auth",
            "-o",
            "jsonpath={.subjects[0].namespace}/{.subjects[0].name}",
        ])
        .await;
    assert_eq!(subject, "team/default");
    k.ok(&[
        "-n",
        "team",
        "run",
        "dbg",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ])
    .await;
    k.ok(&[
        "-n",
        "team",
        "wait",
        "--for=condition=Ready",
        "pod/dbg",
        "--timeout=30s",
    ])
    .await;
    let err = k.fails(&["create", "namespace", "team"]).await;
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    h.shutdown().await.expect("shutdown");
}

async fn apply_client_side_server_side_and_dry_run(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    let out = k.ok_stdin(&["apply", "-f", "-"], MANIFEST).await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let again = k.ok_stdin(&["apply", "-f", "-"], MANIFEST).await;
    assert!(again.contains("configmap/settings unchanged"), "{again}");
    // Strict validation (kubectl's default) rejects a typo in a built-in kind.
    let typo = MANIFEST.replace("replicas: 2", "replica: 2");
    let mut cmd = k.command(&["apply", "-f", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(typo.as_bytes())
        .await
        .expect("write");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("done")
        .expect("out");
    assert!(!out.status.success(), "a typo must be rejected");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.replica\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry = k
        .ok_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            &MANIFEST.replace("mode: one", "mode: two"),
        )
        .await;
    assert!(
        dry.contains("configmap/settings configured (server dry run)"),
        "{dry}"
    );
    assert_eq!(
        k.ok(&[
            "-n",
            "apps",
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.data.mode}"
        ])
        .await,
        "one"
    );
    let ssa = k
        .ok_stdin(
            // Moving from client-side to server-side apply needs no force: kubectl takes
            // over the fields of its last client-side apply.
            &["apply", "--server-side", "-f", "-"],
            &MANIFEST.replace("mode: one", "mode: three"),
        )
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    assert_eq!(
        k.ok(&[
            "-n",
            "apps",
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.data.mode}"
        ])
        .await,
        "three"
    );
    let managers = k
        .ok(&[
            "-n",
            "apps",
            "get",
            "cm",
            "settings",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    let managers: Vec<&str> = managers.split_whitespace().collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    assert!(
        !managers.contains(&"kubectl-client-side-apply"),
        "ownership migrated: {managers:?}"
    );
    k.ok(&[
        "-n",
        "apps",
        "wait",
        "--for=condition=Available",
        "deploy/web",
        "--timeout=30s",
    ])
    .await;
    let pods = k
        .ok(&["-n", "apps", "get", "pods", "-l", "app=web", "-o", "name"])
        .await;
    assert_eq!(pods.lines().count(), 2, "{pods}");
    h.shutdown().await.expect("shutdown");
}

async fn patch_label_delete_and_watch(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    k.ok_stdin(&["apply", "-f", "-"], MANIFEST).await;
    k.ok(&[
        "-n",
        "apps",
        "patch",
        "cm",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"extra":"x"}}"#,
    ])
    .await;
    k.ok(&[
        "-n",
        "apps",
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/mode","value":"json"}]"#,
    ])
    .await;
    k.ok(&[
        "-n",
        "apps",
        "patch",
        "deploy",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
    ])
    .await;
    let image = k
        .ok(&[
            "-n",
            "apps",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "nginx:1.28");
    let ports = k
        .ok(&[
            "-n",
            "apps",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort}",
        ])
        .await;
    assert_eq!(
        ports, "80",
        "strategic merge keeps the other container fields"
    );
    k.ok(&["-n", "apps", "label", "cm", "settings", "team=platform"])
        .await;
    let labelled = k
        .ok(&[
            "-n",
            "apps",
            "get",
            "cm",
            "-l",
            "team=platform",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(labelled.trim(), "configmap/settings");

    // get -w sees a change made while it watches.
    let mut watch = k.command(&[
        "-n",
        "apps",
        "get",
        "cm",
        "settings",
        "-w",
        "-o",
        "jsonpath={.data.mode}{\"\\n\"}",
    ]);
    watch.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = watch.spawn().expect("watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("first line")
        .expect("read")
        .expect("line");
    assert_eq!(first, "json");
    k.ok(&[
        "-n",
        "apps",
        "patch",
        "cm",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"watched"}}"#,
    ])
    .await;
    let next = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("event")
        .expect("read")
        .expect("line");
    assert_eq!(next, "watched");
    child.kill().await.expect("stop watch");

    k.ok(&[
        "-n",
        "apps",
        "delete",
        "deploy",
        "web",
        "--wait",
        "--timeout=30s",
    ])
    .await;
    k.ok(&["delete", "namespace", "apps", "--wait", "--timeout=30s"])
        .await;
    let gone = k.fails(&["get", "namespace", "apps"]).await;
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    h.shutdown().await.expect("shutdown");
}

async fn crd_apply_wait_and_custom_resource(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], crd)
        .await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=30s",
    ])
    .await;
    let cr = "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\n  namespace: default\nspec:\n  size: 3\n";
    k.ok_stdin(&["apply", "-f", "-"], cr).await;
    assert_eq!(
        k.ok(&["get", "gd", "g1", "-o", "jsonpath={.spec.size}"])
            .await,
        "3"
    );
    let table = k.ok(&["get", "gadgets"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "SIZE", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("g1") && l.contains(" 3 ")),
        "{table}"
    );
    // Strict validation rejects unknown fields of a custom resource.
    let bad = cr.replace("size: 3", "size: 3\n  bogus: true");
    let mut cmd = k.command(&["apply", "-f", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bad.as_bytes())
        .await
        .expect("write");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("done")
        .expect("out");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.shutdown().await.expect("shutdown");
}

async fn port_forward_to_a_service(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    h.register_pod_backend("vault", "vault-0", Arc::new(EchoBackend { port: 8200 }));
    let k = Kubectl::new(bin, &h, dir.path());
    let vault = r#"
apiVersion: v1
kind: Namespace
metadata: {name: vault}
---
apiVersion: v1
kind: Service
metadata: {name: vault, namespace: vault}
spec:
  selector: {app: vault}
  ports: [{name: http, port: 8200, targetPort: 8200}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: vault, namespace: vault}
spec:
  serviceName: vault
  replicas: 1
  selector: {matchLabels: {app: vault}}
  template:
    metadata: {labels: {app: vault}}
    spec:
      containers: [{name: vault, image: hashicorp/vault, ports: [{containerPort: 8200}]}]
"#;
    k.ok_stdin(&["apply", "-f", "-"], vault).await;
    k.ok(&[
        "-n",
        "vault",
        "wait",
        "--for=condition=Ready",
        "pod/vault-0",
        "--timeout=30s",
    ])
    .await;
    let described = tokio::time::timeout(T, async {
        loop {
            let d = k.ok(&["-n", "vault", "describe", "svc", "vault"]).await;
            if d.lines()
                .any(|l| l.starts_with("Endpoints:") && l.contains(":8200"))
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("service endpoints");
    assert!(described.contains("10.42.0."), "{described}");
    let mut pf = k.command(&["-n", "vault", "port-forward", "svc/vault", ":8200"]);
    pf.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = pf.spawn().expect("port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("forwarding line")
        .expect("read")
        .expect("line");
    // "Forwarding from 127.0.0.1:NNNNN -> 8200"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"));
    for round in 0..2 {
        let mut s = tokio::time::timeout(T, tokio::net::TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect in time")
            .expect("connect");
        let msg = format!("hello vault {round}");
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        let r = tokio::time::timeout(T, s.read_exact(&mut buf))
            .await
            .expect("echo in time");
        if r.is_err() {
            child.kill().await.ok();
            let mut err = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .await
                .ok();
            panic!("port-forward failed: {r:?}; kubectl said: {err}");
        }
        assert_eq!(buf, msg.as_bytes());
    }
    child.kill().await.expect("stop port-forward");
    h.shutdown().await.expect("shutdown");
}

const GIT_REPOSITORY: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1m0s
  ref: {branch: main}
  secretRef: {name: flux-system}
  url: https://git.sandbox.test/org/fleet
"#;

async fn flux_gitrepository_wait_and_port_forward_to_the_real_vault(bin: PathBuf) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("fleet");
    std::fs::create_dir_all(repo.join("clusters")).expect("mkdir");
    std::fs::write(
        repo.join("clusters/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n",
    )
    .expect("write");
    let mut c = SandboxConfig::new(dir.path().join("sandbox"));
    c.git_repos
        .insert("https://git.sandbox.test/org/fleet".into(), repo);
    c.preinstall_vault = true;
    let h = tokio::time::timeout(T, Sandbox::start(c))
        .await
        .expect("start in time")
        .expect("sandbox starts");
    let k = Kubectl::new(bin, &h, dir.path());
    // Flux's install manifest, fetched over HTTPS from the sandbox like a release asset.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(h.ca_pem().as_bytes()).expect("ca"))
        .build()
        .expect("http");
    let manifest = tokio::time::timeout(T, async {
        http.get(h.flux_install_url())
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    })
    .await
    .expect("fetch in time")
    .expect("fetch");
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &manifest)
        .await;
    k.ok(&[
        "-n",
        "flux-system",
        "wait",
        "--for=condition=Available",
        "deployment/source-controller",
        "--timeout=30s",
    ])
    .await;
    k.ok(&[
        "-n",
        "flux-system",
        "create",
        "secret",
        "generic",
        "flux-system",
        "--from-literal=username=git",
        "--from-literal=password=sandbox-token",
    ])
    .await;
    k.ok_stdin(&["apply", "-f", "-"], GIT_REPOSITORY).await;
    k.ok(&[
        "-n",
        "flux-system",
        "wait",
        "--for=condition=Ready",
        "gitrepository/flux-system",
        "--timeout=30s",
    ])
    .await;
    let got = k
        .ok(&["-n", "flux-system", "get", "gitrepository", "flux-system"])
        .await;
    assert!(
        got.contains("stored artifact for revision 'main@sha1:"),
        "{got}"
    );

    // `kubectl port-forward svc/vault` reaches the sandbox Vault (uninitialised: 501).
    k.ok(&[
        "-n",
        "vault",
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/vault-0",
        "--timeout=30s",
    ])
    .await;
    let mut pf = k.command(&["-n", "vault", "port-forward", "svc/vault", ":8200"]);
    pf.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = pf.spawn().expect("port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("forwarding line")
        .expect("read")
        .expect("line");
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"));
    let resp = tokio::time::timeout(
        T,
        reqwest::get(format!("http://127.0.0.1:{port}/v1/sys/health")),
    )
    .await
    .expect("health in time")
    .expect("health");
    assert_eq!(resp.status().as_u16(), 501);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["initialized"], false);
    assert_eq!(body["sealed"], true);
    child.kill().await.expect("stop port-forward");
    h.shutdown().await.expect("shutdown");
}

/// RBAC as kubectl meets it: `auth can-i` (also `--as` a service account), a service-account
/// token refused with the apiserver's Forbidden message, then allowed after a RoleBinding.
async fn rbac_can_i_forbidden_then_role_binding(bin: PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = sandbox(dir.path()).await;
    let k = Kubectl::new(bin, &h, dir.path());
    k.ok(&["create", "namespace", "team"]).await;
    k.ok(&["-n", "team", "create", "serviceaccount", "bot"])
        .await;
    let sa = "system:serviceaccount:team:bot";
    let as_sa = format!("--as={sa}");
    assert_eq!(
        k.ok(&["auth", "can-i", "get", "secrets", "-n", "team"])
            .await
            .trim(),
        "yes"
    );
    let mut no = k.command(&["auth", "can-i", "get", "secrets", "-n", "team", &as_sa]);
    let out = tokio::time::timeout(T, no.output())
        .await
        .expect("can-i in time")
        .expect("can-i runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert_eq!(out.status.code(), Some(1), "can-i exits 1 for no");
    let token = k
        .ok(&["-n", "team", "create", "token", "bot"])
        .await
        .trim()
        .to_string();
    let with_token = format!("--token={token}");
    let err = k
        .fails(&["-n", "team", "get", "secrets", &with_token])
        .await;
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): secrets is forbidden: User \"{sa}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
        )),
        "{err}"
    );
    k.ok(&[
        "-n",
        "team",
        "create",
        "rolebinding",
        "bot-edit",
        "--clusterrole=edit",
        "--serviceaccount=team:bot",
    ])
    .await;
    k.ok(&["-n", "team", "get", "secrets", &with_token]).await;
    assert_eq!(
        k.ok(&["auth", "can-i", "get", "secrets", "-n", "team", &as_sa])
            .await
            .trim(),
        "yes"
    );
    assert_eq!(
        k.ok(&[
            "auth",
            "can-i",
            "create",
            "pods/portforward",
            "-n",
            "team",
            &as_sa
        ])
        .await
        .trim(),
        "yes"
    );
    // `can-i --list` (a SelfSubjectRulesReview, sent as protobuf) shows the bound rules.
    let list = k
        .ok(&["auth", "can-i", "--list", "-n", "team", &as_sa])
        .await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("secrets ") && l.contains("get") && l.contains("create")),
        "{list}"
    );
    // The RoleBinding grants nothing elsewhere, and edit grants no RBAC writes.
    for args in [
        vec![
            "auth",
            "can-i",
            "get",
            "secrets",
            "-n",
            "default",
            as_sa.as_str(),
        ],
        vec![
            "auth",
            "can-i",
            "create",
            "roles",
            "-n",
            "team",
            as_sa.as_str(),
        ],
    ] {
        let out = tokio::time::timeout(T, k.command(&args).output())
            .await
            .expect("can-i in time")
            .expect("can-i runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{args:?}"
        );
    }
    let err = k.fails(&["get", "namespaces", &with_token]).await;
    assert!(
        err.contains(&format!("User \"{sa}\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope")),
        "{err}"
    );
    h.shutdown().await.expect("shutdown");
}

/// Runs `scenario` with kubectl 1.`minor`, or prints a loud SKIP when that binary is missing.
async fn with_kubectl<F: std::future::Future<Output = ()>>(
    minor: u32,
    test: &str,
    scenario: impl FnOnce(PathBuf) -> F,
) {
    if let Some(bin) = kubectl_version_or_skip(minor, test) {
        scenario(bin).await;
    }
}

/// One test per scenario for kubectl 1.`$minor`.
macro_rules! scenarios {
    ($minor:literal; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::with_kubectl($minor, stringify!($name), super::$name).await;
            }
        )*
    };
}

/// The whole suite for one kubectl version.
macro_rules! kubectl_version {
    ($module:ident, $minor:literal) => {
        mod $module {
            scenarios!($minor;
                version_get_describe_api_resources,
                create_commands_send_protobuf_and_work,
                apply_client_side_server_side_and_dry_run,
                patch_label_delete_and_watch,
                crd_apply_wait_and_custom_resource,
                port_forward_to_a_service,
                flux_gitrepository_wait_and_port_forward_to_the_real_vault,
                rbac_can_i_forbidden_then_role_binding,
            );
        }
    };
}

kubectl_version!(kubectl_1_27, 27);
kubectl_version!(kubectl_1_28, 28);
kubectl_version!(kubectl_1_29, 29);
kubectl_version!(kubectl_1_30, 30);
kubectl_version!(kubectl_1_31, 31);
kubectl_version!(kubectl_1_32, 32);
kubectl_version!(kubectl_1_33, 33);
