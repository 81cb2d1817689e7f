//! Safe inputs (issue 11): Vault paths that resolve elsewhere, credentials inside URLs and a
//! plain-http Vault address are rejected at load (exit 2, nothing touched), the last unless
//! explicitly allowed, which the plan then shows as a warning.

use std::path::Path;
use std::sync::Arc;

use kubestrap::engine::{self, RunEnv};
use kubestrap::playbook::{Playbook, PlaybookError, Problem};
use kubestrap_test_support::{self as common, kubestrap_bin, sandbox_playbook_copy};

fn problems(text: &str) -> Vec<Problem> {
    match Playbook::from_str_at(text, Path::new("kubestrap.toml")) {
        Err(PlaybookError::Invalid(p)) => p.problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn vault_paths_with_dot_dot_dot_or_empty_segments_are_rejected() {
    for bad in [
        "bootstrap/../sys",
        "./bootstrap",
        "bootstrap/.",
        "bootstrap//git",
    ] {
        let text = common::MINIMAL.replace("bootstrap/git", bad);
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{bad}: {found:#?}");
        assert_eq!(found[0].key, "secrets[0].vault_path", "{bad}");
        assert!(found[0].message.contains("\"..\""), "{bad}: {found:?}");
    }
    let text = common::MINIMAL.replace(
        "[[secrets]]",
        "[vault]\nkv_mount = \"kv/..\"\n\n[[secrets]]",
    );
    assert_eq!(problems(&text)[0].key, "vault.kv_mount");
}

#[test]
fn a_git_url_with_credentials_is_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "https://bob:ghp_CANARY1234@example.com/org/fleet",
        "https://ghp_CANARY1234@example.com/org/fleet",
    ] {
        let text = common::MINIMAL.replace("https://example.com/org/fleet", url);
        let _ = common::write_playbook(dir.path(), &text);
        let out = common::run(&kubestrap_bin!(), &["plan"], dir.path(), &[]);
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains("`flux.git_url`"), "{all}");
        assert!(
            all.contains("put the token in the environment variable \"KS_TEST_TOKEN\""),
            "{all}"
        );
        assert!(!all.contains("CANARY"), "the credential is echoed:\n{all}");
        assert!(!dir.path().join(".kubestrap").exists());
    }
    // ssh://git@host names a login user, not a secret.
    let text = common::MINIMAL.replace(
        "https://example.com/org/fleet",
        "ssh://git@example.com/org/fleet",
    );
    assert!(Playbook::from_str_at(&text, Path::new("kubestrap.toml")).is_ok());
    let text = common::MINIMAL.replace(
        "[[secrets]]",
        "[vault]\naccess = \"address\"\naddress = \"https://root:s3cret@vault.example:8200\"\n\n[[secrets]]",
    );
    let found = problems(&text);
    assert_eq!(found[0].key, "vault.address", "{found:#?}");
}

#[test]
fn a_plain_http_vault_address_needs_allow_http_and_the_plan_warns() {
    let vault = "[vault]\naccess = \"address\"\naddress = \"http://vault.example:8200\"\n";
    let text = common::MINIMAL.replace("[[secrets]]", &format!("{vault}\n[[secrets]]"));
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "vault.address");
    assert!(found[0].message.contains("allow_http = true"), "{found:?}");

    // Allowed: it loads, and the plan says what it costs.
    let copy = sandbox_playbook_copy();
    let path = copy.path().join("playbooks/sandbox.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "access = \"port-forward\"",
        "access = \"address\"\naddress = \"http://vault.example:8200\"\nallow_http = true",
    );
    std::fs::write(&path, text).unwrap();
    let pb = Playbook::load(&path).unwrap();
    let engine = kubestrap::steps::build(&pb).unwrap();
    let cluster = Arc::new(kubestrap::steps::Cluster::of_playbook(&pb));
    let env = RunEnv::new(pb).with_finished_resource(cluster);
    let rt = common::runtime();
    let plan = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            engine::plan(&engine, &env, 4),
        )
        .await
        .unwrap()
    });
    let mut text = Vec::new();
    kubestrap::output::render_text(&plan, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("connect to http://vault.example:8200")
            && text.contains("warning: plain http"),
        "{text}"
    );
}

#[test]
fn terraform_pass_env_never_names_a_declared_secret() {
    let text = common::MINIMAL.replace(
        "[[secrets]]",
        "[terraform]\npass_env = [\"AWS_*\", \"KS_*\", \"BAD NAME\"]\n\n[[secrets]]",
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["terraform.pass_env[1]", "terraform.pass_env[2]"],
        "{found:#?}"
    );
    assert!(found[0].message.contains("KS_TEST_TOKEN"), "{found:?}");
    let ok = common::MINIMAL.replace(
        "[[secrets]]",
        "[terraform]\npass_env = [\"AWS_*\", \"TF_TOKEN_*\", \"HTTPS_PROXY\"]\n\n[[secrets]]",
    );
    let pb = Playbook::from_str_at(&ok, Path::new("kubestrap.toml")).unwrap();
    assert_eq!(pb.playbook.terraform.pass_env.len(), 3);
}

#[test]
fn a_secret_in_k3s_exec_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    for exec in [
        "server --token K10-CANARY-join-token",
        "server --datastore-endpoint=postgres://k3s:CANARY-pw@db:5432/k3s",
    ] {
        let text = common::MINIMAL.replace(
            "provider = \"existing\"",
            &format!(
                "provider = \"k3s-local\"\nk3s_version = \"v1.33.1+k3s1\"\nk3s_exec = {exec:?}"
            ),
        );
        let _ = common::write_playbook(dir.path(), &text);
        let out = common::run(&kubestrap_bin!(), &["plan"], dir.path(), &[]);
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(
            all.contains("`cluster.k3s_exec`")
                && all.contains("--token-file")
                && all.contains("--token ${K3S_TOKEN}"),
            "{all}"
        );
        assert!(!all.contains("CANARY"), "the secret is echoed:\n{all}");
        assert!(!dir.path().join(".kubestrap").exists());
    }
}

#[test]
fn a_k3s_exec_reference_must_name_a_declared_k3s_secret() {
    let dir = tempfile::tempdir().unwrap();
    for (exec, declared, wanted) in [
        (
            "server --token ${K3S_TOKEN}",
            "",
            "${K3S_TOKEN} names no declared secret: add a [[secrets]] entry with env = \"K3S_TOKEN\"",
        ),
        (
            "server --token ${JOIN}",
            "\n[[secrets]]\nenv = \"JOIN\"\nvault_path = \"bootstrap/k3s\"\nvault_key = \"token\"\n",
            "declare the secret as env = \"K3S_JOIN\"",
        ),
    ] {
        let text = common::MINIMAL.replace(
            "provider = \"existing\"",
            &format!(
                "provider = \"k3s-local\"\nk3s_version = \"v1.33.1+k3s1\"\nk3s_exec = {exec:?}"
            ),
        ) + declared;
        let _ = common::write_playbook(dir.path(), &text);
        let out = common::run(&kubestrap_bin!(), &["plan"], dir.path(), &[]);
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(
            all.contains("`cluster.k3s_exec`") && all.contains(wanted),
            "{all}"
        );
        assert!(!dir.path().join(".kubestrap").exists());
    }
}
