//! The real terraform binary, run through `kubestrap::terraform`, against an in-test HTTP server
//! standing in for Vault's KV v2 endpoint.
//!
//! Proves: secret values arrive intact (through the var-file pipe, HCL escaping, jsonencode and
//! curl), no secret is in any argv (wrappers record the argv of terraform and of curl), the
//! child environment holds only the documented variables, the state holds no secret, a second
//! apply writes nothing, and a failing module returns Terraform's own error.
//!
//! Without terraform on PATH the tests print `SKIP: terraform not found` and pass, unless
//! `KUBESTRAP_REQUIRE_TERRAFORM=1` (CI), where absence fails.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubestrap::terraform::{
    OutputStream, Terraform, TerraformError, VarValue, Variables, find_on_path,
};
use secrecy::SecretString;
use serde_json::Value;

const TOKEN: &str = "hvs.canary-root-token-4242";

/// Values chosen to break naive quoting: quotes, backslashes, HCL template sequences,
/// newlines, a shell metacharacter soup and non-ASCII.
fn canaries() -> BTreeMap<&'static str, BTreeMap<&'static str, &'static str>> {
    BTreeMap::from([
        (
            "bootstrap/github",
            BTreeMap::from([
                ("username", "git"),
                ("password", "ghp_canary\"quote\\slash${x}%{y}"),
            ]),
        ),
        (
            "apps/cloudflare",
            BTreeMap::from([("token", "cf-canary line1\nline2 $(rm -rf /) `id` 'q' é😀")]),
        ),
    ])
}

fn real_terraform() -> Option<PathBuf> {
    let found = find_on_path("terraform", &std::env::var_os("PATH").unwrap_or_default());
    if found.is_none() {
        if std::env::var("KUBESTRAP_REQUIRE_TERRAFORM").as_deref() == Ok("1") {
            panic!("terraform not found on PATH but KUBESTRAP_REQUIRE_TERRAFORM=1");
        }
        eprintln!("SKIP: terraform not found");
    }
    found
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server answering every request with `status` and `body`, recording requests.
fn vault_stub(status: u16, reply_body: &'static str) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_owned();
            let path = parts.next().unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            if header("expect").is_some() {
                conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
            }
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            log2.lock().unwrap().push(Request {
                method,
                path,
                headers,
                body,
            });
            let reason = if status == 200 { "OK" } else { "Error" };
            let reply = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply_body}",
                reply_body.len()
            );
            conn.write_all(reply.as_bytes()).unwrap();
        }
    });
    (format!("http://{addr}"), log)
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Workspace {
    _dir: tempfile::TempDir,
    module: PathBuf,
    home: PathBuf,
    record: PathBuf,
    path: OsString,
}

/// A temp copy of the fixture module, a private HOME, and wrappers for terraform and curl that
/// record their argv (and terraform's initial environment) before exec'ing the real binaries.
fn workspace(real_tf: &Path) -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module");
    std::fs::create_dir(&module).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/terraform/vault-kv/main.tf");
    std::fs::copy(fixture, module.join("main.tf")).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let record = dir.path().join("record.log");
    let real_curl =
        find_on_path("curl", &std::env::var_os("PATH").unwrap_or_default()).expect("curl on PATH");
    let log = record.display();
    write_script(
        &bin.join("terraform"),
        &format!(
            "#!/bin/sh\n{{ printf 'ARGV terraform'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; printf '\\n';\n\
             tr '\\0' '\\n' < /proc/$$/environ | sed 's/^/ENV /'; }} >> '{log}'\nexec '{}' \"$@\"\n",
            real_tf.display()
        ),
    );
    write_script(
        &bin.join("curl"),
        &format!(
            // One printf per line: terraform's provider runs its curls side by side, and
            // several small appends from two processes interleave in the record.
            "#!/bin/sh\nline='ARGV curl'; for a in \"$@\"; do line=\"$line [$a]\"; done\nprintf '%s\\n' \"$line\" >> '{log}'\n\
             exec '{}' \"$@\"\n",
            real_curl.display()
        ),
    );
    let path = std::env::join_paths([
        bin.as_path(),
        Path::new("/usr/local/bin"),
        Path::new("/usr/bin"),
        Path::new("/bin"),
    ])
    .unwrap();
    Workspace {
        _dir: dir,
        module,
        home,
        record,
        path,
    }
}

type Canaries = BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>;

fn variables_from(secrets: Canaries) -> Variables {
    let secrets = secrets
        .into_iter()
        .map(|(path, kv)| {
            let kv = kv
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        VarValue::Secret(SecretString::from(v.to_owned())),
                    )
                })
                .collect();
            (path.to_owned(), VarValue::Map(kv))
        })
        .collect();
    let mut vars = Variables::new();
    vars.plain("mount", "secret")
        .value("secrets", VarValue::Map(secrets));
    vars
}

fn variables() -> Variables {
    variables_from(canaries())
}

fn terraform(ws: &Workspace, vault: &str) -> Terraform {
    Terraform::with_path("terraform", &ws.module, ws.path.clone())
        .unwrap()
        .home(&ws.home)
        .env("VAULT_ADDR", vault)
        .secret_env("VAULT_TOKEN", SecretString::from(TOKEN))
}

fn every_secret() -> Vec<String> {
    let mut all: Vec<String> = canaries()
        .values()
        .flat_map(|kv| kv.values().map(|v| (*v).to_owned()))
        .filter(|v| v.len() > 3)
        .collect();
    all.push(TOKEN.to_owned());
    all
}

async fn run(
    ws: &Workspace,
    vault: &str,
) -> (Result<(), TerraformError>, Vec<(OutputStream, String)>) {
    let tf = terraform(ws, vault);
    let mut output = Vec::new();
    let mut sink = |s: OutputStream, l: &str| output.push((s, l.to_owned()));
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        tf.init(&mut sink).await?;
        tf.apply(&variables(), &mut sink).await
    })
    .await
    .expect("terraform finished within 240s");
    (result, output)
}

#[tokio::test]
async fn secrets_reach_vault_through_the_pipe_and_nowhere_else() {
    let Some(real_tf) = real_terraform() else {
        return;
    };
    let ws = workspace(&real_tf);
    let (vault, log) = vault_stub(
        200,
        r#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":{"version":1}}"#,
    );
    let (result, output) = run(&ws, &vault).await;
    if let Err(e) = &result {
        panic!("terraform failed: {e}\noutput: {output:#?}");
    }

    // The values arrive intact, one KV v2 write per path, with the token header.
    let requests = log.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one write per path");
    let mut got: BTreeMap<String, Value> = BTreeMap::new();
    for r in &requests {
        assert_eq!(r.method, "POST");
        let token = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-vault-token")
            .map(|(_, v)| v.as_str());
        assert_eq!(token, Some(TOKEN));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        got.insert(r.path.clone(), body);
    }
    let want: BTreeMap<String, Value> = canaries()
        .into_iter()
        .map(|(path, kv)| {
            (
                format!("/v1/secret/data/{path}"),
                serde_json::json!({ "data": kv }),
            )
        })
        .collect();
    assert_eq!(got, want);

    // No secret in any argv, and terraform's environment holds only the documented variables.
    let record = std::fs::read_to_string(&ws.record).unwrap();
    let argv: Vec<&str> = record.lines().filter(|l| l.starts_with("ARGV ")).collect();
    assert!(
        argv.iter().any(|l| l.starts_with("ARGV terraform [apply]")),
        "{record}"
    );
    assert!(
        argv.iter().filter(|l| l.starts_with("ARGV curl")).count() >= 2,
        "{record}"
    );
    for line in &argv {
        for secret in every_secret() {
            assert!(!line.contains(&secret), "a secret leaked into argv: {line}");
        }
        if line.starts_with("ARGV terraform [apply]") {
            assert!(line.contains("[-var-file=/dev/fd/"), "{line}");
        }
    }
    let allowed = [
        "PATH",
        "HOME",
        "TF_IN_AUTOMATION",
        "TF_INPUT",
        "CHECKPOINT_DISABLE",
        "VAULT_ADDR",
        "VAULT_TOKEN",
    ];
    for line in record.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        assert!(
            allowed.contains(&key),
            "undocumented variable in terraform's environment: {key}"
        );
        match key {
            "TF_IN_AUTOMATION" | "TF_INPUT" => {
                assert_eq!(value, if key == "TF_INPUT" { "0" } else { "1" })
            }
            "HOME" => assert_eq!(value, ws.home.display().to_string()),
            _ => {}
        }
    }

    // Nothing secret in the streamed output or in the state (only sha256 triggers).
    for (_, line) in &output {
        for secret in every_secret() {
            assert!(
                !line.contains(&secret),
                "a secret reached the output: {line}"
            );
        }
    }
    let state = std::fs::read_to_string(ws.module.join("terraform.tfstate")).unwrap();
    for secret in every_secret() {
        assert!(!state.contains(&secret), "a secret is in the state file");
    }
    for value in canaries().values() {
        let json = serde_json::to_string(value).unwrap();
        assert!(!state.contains(&json));
    }

    // A second apply with the same values changes nothing and writes nothing.
    let (again, output) = run(&ws, &vault).await;
    again.unwrap_or_else(|e| panic!("second run failed: {e}"));
    assert!(
        output
            .iter()
            .any(|(_, l)| l.contains("Resources: 0 added, 0 changed, 0 destroyed")),
        "{output:#?}"
    );
    assert_eq!(log.lock().unwrap().len(), 2, "the second apply wrote again");

    // plan -detailed-exitcode: nothing to do with the same values, a change with a new one,
    // and planning writes nothing.
    let tf = terraform(&ws, &vault);
    let mut quiet = |_: OutputStream, _: &str| {};
    let same = variables();
    let plan = tokio::time::timeout(Duration::from_secs(120), tf.plan(&same, &mut quiet));
    assert!(!plan.await.expect("plan finished").unwrap());
    let mut rotated = canaries();
    rotated.insert(
        "apps/cloudflare",
        BTreeMap::from([("token", "rotated-canary")]),
    );
    let rotated = variables_from(rotated);
    let plan = tokio::time::timeout(Duration::from_secs(120), tf.plan(&rotated, &mut quiet));
    assert!(plan.await.expect("plan finished").unwrap());
    assert_eq!(log.lock().unwrap().len(), 2, "plan wrote to vault");
}

#[tokio::test]
async fn a_failing_write_returns_terraforms_own_error() {
    let Some(real_tf) = real_terraform() else {
        return;
    };
    let ws = workspace(&real_tf);
    let (vault, requests) = vault_stub(403, r#"{"errors":["permission denied"]}"#);
    let (result, output) = run(&ws, &vault).await;
    let Err(TerraformError::Failed { command, error, .. }) = result else {
        panic!("expected a terraform failure, got {result:?}\noutput: {output:#?}");
    };
    assert_eq!(command, "apply");
    assert!(
        error.starts_with("Error: local-exec provisioner error"),
        "{error}"
    );
    assert!(error.contains("exit status 22"), "{error}");
    assert!(
        error.contains("permission denied"),
        "vault's own message is kept: {error}"
    );
    for secret in every_secret() {
        assert!(
            !error.contains(&secret),
            "a secret reached the error: {error}"
        );
    }
    assert!(!requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_binary_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = Terraform::with_path("tofu", dir.path(), OsString::from(dir.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"tofu\" was not found on PATH: install it, or set [terraform] binary to terraform or tofu"
    );
}
