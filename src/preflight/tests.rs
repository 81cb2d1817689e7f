use std::path::Path;

use super::*;
use crate::playbook::Playbook;

const BASE: &str = include_str!("../../tests/fixtures/playbooks/preflight-base.toml");

const KUBECONFIG: &str = r"
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: c
  cluster: {server: 'https://127.0.0.1:6443'}
contexts:
- name: prod
  context: {cluster: c, user: u}
users:
- name: u
  user: {token: t}
";

fn load(dir: &Path, text: &str) -> LoadedPlaybook {
    let path = dir.join("kubestrap.toml");
    std::fs::write(&path, text).unwrap();
    Playbook::load(&path).unwrap()
}

/// A directory with executables `names` in it, as a PATH.
fn path_with(dir: &Path, names: &[&str]) -> OsString {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for n in names {
        let p = bin.join(n);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.into_os_string()
}

fn module(dir: &Path) {
    std::fs::create_dir_all(dir.join("module")).unwrap();
    std::fs::write(dir.join("module/main.tf"), "").unwrap();
}

fn run(
    pb: &LoadedPlaybook,
    env: Env,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Vec<Problem> {
    let all = |_: &str| true;
    check(&Inputs {
        playbook: pb,
        kubeconfig_flag: kubeconfig,
        context_flag: context,
        runs: &all,
        env,
    })
    .err()
    .map(|e| e.problems)
    .unwrap_or_default()
}

fn env(path: OsString, home: &Path) -> Env {
    Env {
        path,
        kubeconfig: None,
        home: Some(home.to_owned()),
    }
}

#[test]
fn a_missing_module_dir_and_binary_are_both_reported_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let pb = load(dir.path(), BASE);
    let path = path_with(dir.path(), &["terraform"]);
    let problems = run(&pb, env(path, dir.path()), Some(&kc), None);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["terraform.dir", "terraform.binary"], "{problems:?}");
    assert_eq!(problems[0].position, Some((12, 1)));
    assert_eq!(problems[1].position, Some((13, 1)));
    assert!(
        problems[0].message.contains("does not exist"),
        "{problems:?}"
    );
    assert!(
        problems[1]
            .remedy
            .contains("binary = \"terraform\", which is on PATH"),
        "{problems:?}"
    );
}

#[test]
fn a_module_dir_without_tf_files_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("module")).unwrap();
    let kc = dir.path().join("kc");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let pb = load(dir.path(), BASE);
    let problems = run(
        &pb,
        env(path_with(dir.path(), &["tofu"]), dir.path()),
        Some(&kc),
        None,
    );
    assert_only_problem(&problems, "no .tf");
}

#[test]
fn existing_needs_a_kubeconfig_that_defines_the_context() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path());
    let path = path_with(dir.path(), &["tofu"]);
    let text = BASE.replace(
        "provider = \"existing\"",
        "provider = \"existing\"\nkubeconfig = \"missing.yaml\"",
    );
    let pb = load(dir.path(), &text);
    let problems = run(&pb, env(path.clone(), dir.path()), None, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "cluster.kubeconfig");
    assert_eq!(problems[0].position, Some((5, 1)));
    assert!(problems[0].message.contains("missing.yaml does not exist"));

    std::fs::write(dir.path().join("missing.yaml"), KUBECONFIG).unwrap();
    let text = text.replace(
        "kubeconfig = \"missing.yaml\"",
        "kubeconfig = \"missing.yaml\"\ncontext = \"prd\"",
    );
    let pb = load(dir.path(), &text);
    let problems = run(&pb, env(path.clone(), dir.path()), None, None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "cluster.context");
    assert!(
        problems[0].message.contains("did you mean \"prod\"?"),
        "{problems:?}"
    );
    // --context wins over the playbook and is named as the source.
    let problems = run(&pb, env(path.clone(), dir.path()), None, Some("nope"));
    assert_eq!(problems[0].key, "--context");
    assert!(run(&pb, env(path, dir.path()), None, Some("prod")).is_empty());
}

#[test]
fn existing_without_any_kubeconfig_names_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path());
    let pb = load(dir.path(), BASE);
    let problems = run(
        &pb,
        env(path_with(dir.path(), &["tofu"]), dir.path()),
        None,
        None,
    );
    assert_only_problem(&problems, ".kube/config");
}

#[test]
fn k3s_ssh_needs_a_kubeconfig_to_write() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path());
    let text = BASE.replace(
        "provider = \"existing\"",
        "provider = \"k3s-ssh\"\nk3s_version = \"v1.33.1+k3s1\"\n[cluster.ssh]\nhost = \"h.invalid\"",
    );
    let pb = load(dir.path(), &text);
    let runs_nothing_remote = |s: &str| s != steps::K3S_INSTALL;
    let err = check(&Inputs {
        playbook: &pb,
        kubeconfig_flag: None,
        context_flag: None,
        runs: &runs_nothing_remote,
        env: env(path_with(dir.path(), &["tofu"]), dir.path()),
    })
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "cluster.kubeconfig");
    assert!(
        err.to_string()
            .contains("[cluster] kubeconfig = \"test.kubeconfig\"")
    );
}

#[test]
fn a_missing_local_install_manifest_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path());
    let kc = dir.path().join("kc");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let text = BASE.replace(
        "token_env = \"T\"",
        "token_env = \"T\"\ninstall_manifest = \"flux/install.yaml\"",
    );
    let pb = load(dir.path(), &text);
    let problems = run(
        &pb,
        env(path_with(dir.path(), &["tofu"]), dir.path()),
        Some(&kc),
        None,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "flux.install_manifest");
    assert_eq!(problems[0].position, Some((10, 1)));
}

#[test]
fn only_the_steps_that_run_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let pb = load(dir.path(), BASE);
    let not_terraform = |s: &str| s != steps::SECRETS_TERRAFORM;
    assert!(
        check(&Inputs {
            playbook: &pb,
            kubeconfig_flag: Some(&kc),
            context_flag: None,
            runs: &not_terraform,
            env: env(OsString::new(), dir.path()),
        })
        .is_ok()
    );
}

#[test]
fn ssh_effective_config_gives_the_lookup_name_and_files() {
    let text = "user bob\nhostname 10.0.0.5\nport 2222\nuserknownhostsfile /h/.ssh/known_hosts /h/.ssh/known_hosts2\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n";
    let c = ssh::parse_effective(text).unwrap();
    assert_eq!(c.lookup_name, "[10.0.0.5]:2222");
    assert_eq!(c.known_hosts.len(), 3);
    let c = ssh::parse_effective("hostname h\nport 22\nhostkeyalias k\n").unwrap();
    assert_eq!(c.lookup_name, "k");
}

#[test]
fn ssh_keygen_finds_plain_and_hashed_entries() {
    let Some(keygen) = find_on_path("ssh-keygen", &std::env::var_os("PATH").unwrap_or_default())
    else {
        eprintln!("skipped: no ssh-keygen");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_hosts");
    let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    std::fs::write(
        &file,
        format!("[k3s.example]:2222 ssh-ed25519 {key}\nplain.example ssh-ed25519 {key}\n"),
    )
    .unwrap();
    assert!(ssh::known(&keygen, "[k3s.example]:2222", &file));
    assert!(ssh::known(&keygen, "plain.example", &file));
    assert!(!ssh::known(&keygen, "k3s.example", &file));
    assert!(!ssh::known(&keygen, "other.example", &file));
}

/// Exactly one problem, and its message holds `needle`.
#[track_caller]
fn assert_only_problem(problems: &[Problem], needle: &str) {
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains(needle), "{problems:?}");
}
