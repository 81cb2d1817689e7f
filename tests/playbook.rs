//! Playbook loading: the shipped playbooks load, and every kind of bad input is reported with
//! file:line, key and suggestion, all at once.

use kubestrap_test_support::{self as common, kubestrap_bin};

use std::path::Path;

use kubestrap::playbook::{Playbook, PlaybookError, Problem, Provider};

#[path = "support/problems.rs"]
mod support;
use support::find;

fn problems(text: &str) -> Vec<Problem> {
    support::problems_at(text, "/tmp/pb/kubestrap.toml")
}

#[test]
fn shipped_playbooks_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let sandbox = Playbook::load(&root.join("sandbox.toml")).unwrap();
    assert_eq!(sandbox.playbook.cluster.provider, Provider::Sandbox);
    let envs: Vec<_> = sandbox
        .playbook
        .secrets
        .iter()
        .map(|s| (s.env.as_str(), s.required))
        .collect();
    assert_eq!(
        envs,
        vec![("GITHUB_TOKEN", true), ("CLOUDFLARE_API_TOKEN", true)]
    );
    for name in ["k3s-single-node.toml", "existing-cluster.toml"] {
        Playbook::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let bao = Playbook::load(&root.join("sandbox-openbao.toml")).unwrap();
    let v = &bao.playbook.vault;
    assert_eq!(v.flavor, kubestrap::playbook::VaultFlavor::Openbao);
    assert_eq!(
        (v.namespace.as_str(), v.release.as_str()),
        ("openbao", "openbao")
    );
    assert_ne!(
        bao.playbook.cluster.name, sandbox.playbook.cluster.name,
        "its own state dir and sandbox beside sandbox.toml's"
    );
}

#[test]
fn relative_paths_resolve_against_the_playbook_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("git/fleet")).unwrap();
    let text = common::MINIMAL.replace(
        "provider = \"existing\"",
        "provider = \"sandbox\"\nkubeconfig = \"kc/config\"",
    ) + "[sandbox]\ngit_repos = { \"https://example.com/org/fleet\" = \"git/fleet\" }\n[terraform]\ndir = \"tf\"\n";
    let pb = playbook_in(dir.path(), &text);
    let p = &pb.playbook;
    assert_eq!(
        p.cluster.kubeconfig.as_deref(),
        Some(dir.path().join("kc/config").as_path())
    );
    assert_eq!(p.terraform.dir, dir.path().join("tf"));
    assert_eq!(
        p.sandbox.as_ref().unwrap().git_repos["https://example.com/org/fleet"],
        dir.path().join("git/fleet")
    );
    assert_eq!(pb.state_dir(), dir.path().join(".kubestrap"));
    assert_eq!(
        pb.sandbox_dir().unwrap(),
        dir.path().join(".kubestrap/test/sandbox")
    );
}

#[test]
fn every_unknown_key_is_reported_with_line_and_nearest_key() {
    let text = format!(
        "{}\n[vault]\nkey_shars = 3\nkv_mont = \"kv\"\n[bogus]\nx = 1\n",
        common::MINIMAL
    )
    .replace("path = \"clusters/test\"", "pth = \"clusters/test\"");
    let found = problems(&text);
    let shares = find(&found, "vault.key_shars");
    assert_eq!(shares.suggestion.as_deref(), Some("key_shares"));
    assert_eq!(
        shares.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("key_shars"))
                .unwrap()
                + 1
        )
    );
    assert_eq!(
        find(&found, "vault.kv_mont").suggestion.as_deref(),
        Some("kv_mount")
    );
    assert_eq!(find(&found, "flux.pth").suggestion.as_deref(), Some("path"));
    let bogus = find(&found, "bogus");
    assert!(
        bogus.suggestion.is_none() && bogus.message.contains("valid keys here"),
        "{bogus:?}"
    );
}

#[test]
fn wrong_types_and_unknown_variants_name_their_field() {
    let text = common::MINIMAL.replace("provider = \"existing\"", "provider = \"k3s-locl\"")
        + "[vault]\nkey_shares = \"five\"\n";
    let found = problems(&text);
    let provider = find(&found, "cluster.provider");
    assert!(
        provider.message.contains("found `k3s-locl`"),
        "{provider:?}"
    );
    assert_eq!(provider.suggestion.as_deref(), Some("k3s-local"));
    assert!(provider.line.is_some());
    let vault = find(&found, "vault.key_shares");
    assert!(vault.message.contains("found string \"five\""), "{vault:?}");
    assert_eq!(
        vault.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("key_shares"))
                .unwrap()
                + 1
        )
    );
}

#[test]
fn missing_sections_and_syntax_errors_are_reported() {
    let found = problems("[cluster]\nname = \"x\"\nprovider = \"existing\"\n");
    assert!(
        find(&found, "flux")
            .message
            .contains("missing section [flux]")
    );
    let found = problems("[cluster\nname = \"x\"\n");
    assert_eq!(found[0].line, Some(1), "{found:?}");
}

#[test]
fn value_rules_are_checked_together() {
    let text = common::MINIMAL
        .replace(
            "token_env = \"KS_TEST_TOKEN\"",
            "token_env = \"KS_TEST_TOKN\"",
        )
        .replace("name = \"test\"", "name = \"Test_Cluster\"")
        + "[vault]\nkey_shares = 2\nkey_threshold = 3\naccess = \"address\"\n[timeouts]\nreconcile = \"0s\"\n";
    let found = problems(&text);
    assert_eq!(
        find(&found, "flux.token_env").suggestion.as_deref(),
        Some("KS_TEST_TOKEN")
    );
    assert!(
        find(&found, "cluster.name")
            .message
            .contains("not a valid cluster name")
    );
    assert!(
        find(&found, "vault.key_threshold")
            .message
            .contains("between 1 and key_shares (2)")
    );
    assert!(
        find(&found, "vault.address")
            .message
            .contains("needs address")
    );
    assert!(
        find(&found, "timeouts.reconcile")
            .message
            .contains("greater than zero")
    );
    let threshold = find(&found, "vault.key_threshold");
    assert_eq!(
        threshold.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("key_threshold"))
                .unwrap()
                + 1
        )
    );
}

#[test]
fn duplicate_and_malformed_secrets_are_rejected() {
    let text = format!(
        "{}\n[[secrets]]\nenv = \"KS_TEST_TOKEN\"\nvault_path = \"/abs\"\nvault_key = \"token\"\n[[secrets]]\nenv = \"lower\"\nvault_path = \"a/b\"\nvault_key = \"k\"\n",
        common::MINIMAL
    );
    let found = problems(&text);
    assert!(
        find(&found, "secrets[1].env")
            .message
            .contains("declared twice")
    );
    assert!(
        find(&found, "secrets[1].vault_path")
            .message
            .contains("not a Vault path")
    );
    assert!(
        find(&found, "secrets[2].env")
            .message
            .contains("not an environment variable name")
    );
}

#[test]
fn sandbox_provider_needs_its_git_url_mapped() {
    let text = common::MINIMAL.replace("provider = \"existing\"", "provider = \"sandbox\"");
    let found = problems(&text);
    assert!(
        find(&found, "flux.git_url").message.contains("map"),
        "{found:?}"
    );
}

#[test]
fn sandbox_vault_server_resolves_relative_and_must_be_an_executable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("git/fleet")).unwrap();
    let with_server = |server: &str| {
        common::MINIMAL.replace("provider = \"existing\"", "provider = \"sandbox\"")
            + "[sandbox]\ngit_repos = { \"https://example.com/org/fleet\" = \"git/fleet\" }\n"
            + &format!("vault_server = {server:?}\n")
    };
    let bin = dir.path().join("bin/bao");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pb = playbook_in(dir.path(), &with_server("bin/bao"));
    assert_eq!(
        pb.playbook
            .sandbox
            .as_ref()
            .unwrap()
            .vault_server
            .as_deref(),
        Some(bin.as_path())
    );
    let text = with_server("/nonexistent/bao");
    let found = match Playbook::from_str_at(&text, &dir.path().join("kubestrap.toml")) {
        Err(PlaybookError::Invalid(p)) => p.problems,
        other => panic!("expected problems, got {other:?}"),
    };
    let p = find(&found, "sandbox.vault_server");
    assert!(
        p.message
            .contains("/nonexistent/bao is not an executable file"),
        "{p:?}"
    );
    assert!(
        p.suggestion
            .as_deref()
            .unwrap_or("")
            .contains("scripts/install-openbao")
    );
}

#[test]
fn fingerprint_ignores_comments_but_not_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = playbook_in(dir.path(), common::MINIMAL);
    let b = playbook_in(dir.path(), &format!("# a comment\n{}", common::MINIMAL));
    let c = playbook_in(
        dir.path(),
        &common::MINIMAL.replace("clusters/test", "clusters/other"),
    );
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.fingerprint, c.fingerprint);
}

#[test]
fn binary_exits_2_and_lists_all_problems() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::MINIMAL.replace("path = \"clusters", "pth = \"clusters")
        + "[vault]\nkey_shars = 1\n";
    std::fs::write(dir.path().join("kubestrap.toml"), text).unwrap();
    let out = common::run(&kubestrap_bin!(), &["plan"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kubestrap.toml:8:1: `flux.pth`: unknown key (did you mean `path`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("`vault.key_shars`"), "{stderr}");
    assert!(
        stderr.contains("`flux.path`: required key is missing: add `path = …`"),
        "{stderr}"
    );
    assert!(stderr.contains("has 3 problems"), "{stderr}");
}

#[test]
fn binary_exits_2_when_the_playbook_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(
        &kubestrap_bin!(),
        &["plan", "-p", "nope.toml"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to read playbook nope.toml"));
}

/// Write `text` as `dir/kubestrap.toml` and load it.
fn playbook_in(dir: &std::path::Path, text: &str) -> kubestrap::playbook::LoadedPlaybook {
    kubestrap::playbook::Playbook::load(&common::write_playbook(dir, text)).unwrap()
}

/// Regression (issue 9): an external-secrets chart older than 0.16.2 serves no
/// external-secrets.io/v1, so kubestrap's v1 objects would fail on the cluster; it is a
/// validation error with its line, before anything is touched.
#[test]
fn eso_chart_version_without_the_v1_api_is_a_validation_error() {
    let text = common::MINIMAL.to_owned() + "[external_secrets]\nchart_version = \"0.16.1\"\n";
    let found = problems(&text);
    let p = find(&found, "external_secrets.chart_version");
    assert!(
        p.message.contains("does not serve external-secrets.io/v1"),
        "{}",
        p.message
    );
    assert!(p.message.contains("\"0.16.2\" or later"), "{}", p.message);
    assert_eq!(
        p.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("chart_version"))
                .unwrap()
                + 1
        )
    );
}

/// Issue 10: `[vault] flavor = "openbao"` switches every flavor default (OpenBao's chart, its
/// repository, namespace and release `openbao`), while values written in the playbook win,
/// and leaving `flavor` out keeps HashiCorp Vault's defaults (and the playbook's fingerprint).
#[test]
fn vault_flavor_openbao_takes_the_openbao_defaults_and_keeps_written_values() {
    use kubestrap::playbook::VaultFlavor;
    let dir = tempfile::tempdir().unwrap();
    let plain = playbook_in(dir.path(), common::MINIMAL);
    let v = &plain.playbook.vault;
    assert_eq!(v.flavor, VaultFlavor::Vault);
    assert_eq!(
        (
            v.namespace.as_str(),
            v.release.as_str(),
            v.chart_repo.as_str()
        ),
        ("vault", "vault", "https://helm.releases.hashicorp.com")
    );
    let explicit_vault = playbook_in(
        dir.path(),
        &format!("{}\n[vault]\nflavor = \"vault\"\n", common::MINIMAL),
    );
    assert_eq!(
        explicit_vault.fingerprint, plain.fingerprint,
        "the default flavor does not change the fingerprint"
    );

    let bao = playbook_in(
        dir.path(),
        &format!("{}\n[vault]\nflavor = \"openbao\"\n", common::MINIMAL),
    );
    let v = &bao.playbook.vault;
    assert_eq!(v.flavor, VaultFlavor::Openbao);
    assert_eq!(
        (
            v.namespace.as_str(),
            v.release.as_str(),
            v.chart_repo.as_str(),
            v.chart_version.as_str()
        ),
        (
            "openbao",
            "openbao",
            "https://openbao.github.io/openbao-helm",
            "0.29.2"
        )
    );
    assert_eq!(
        v.keys_secret, "vault-init-keys",
        "other defaults are shared"
    );
    assert_ne!(bao.fingerprint, plain.fingerprint);

    let written = playbook_in(
        dir.path(),
        &format!(
            "{}\n[vault]\nflavor = \"openbao\"\nnamespace = \"secrets\"\nrelease = \"bank\"\nchart_version = \"0.28.0\"\n",
            common::MINIMAL
        ),
    );
    let v = &written.playbook.vault;
    assert_eq!(
        (
            v.namespace.as_str(),
            v.release.as_str(),
            v.chart_version.as_str(),
            v.chart_repo.as_str()
        ),
        (
            "secrets",
            "bank",
            "0.28.0",
            "https://openbao.github.io/openbao-helm"
        )
    );
}

/// A misspelt flavor is reported at its line with the nearest flavor, like every enum.
#[test]
fn vault_flavor_typo_names_its_key_line_and_nearest_flavor() {
    let text = format!("{}\n[vault]\nflavor = \"openboa\"\n", common::MINIMAL);
    let found = problems(&text);
    let flavor = find(&found, "vault.flavor");
    assert!(flavor.message.contains("found `openboa`"), "{flavor:?}");
    assert!(
        flavor.message.contains("vault") && flavor.message.contains("openbao"),
        "{flavor:?}"
    );
    assert_eq!(flavor.suggestion.as_deref(), Some("openbao"));
    assert_eq!(
        flavor.line,
        Some(text.lines().position(|l| l.starts_with("flavor")).unwrap() + 1)
    );
}

/// The other flavor's chart repository does not serve this flavor's chart: a validation error
/// naming both ways out, instead of a Flux "chart not found" after the apply started.
#[test]
fn openbao_flavor_with_the_hashicorp_repository_is_a_validation_error() {
    let text = format!(
        "{}\n[vault]\nflavor = \"openbao\"\nchart_repo = \"https://helm.releases.hashicorp.com\"\n",
        common::MINIMAL
    );
    let found = problems(&text);
    let repo = find(&found, "vault.chart_repo");
    assert!(
        repo.message.contains("has no `openbao` chart")
            && repo
                .message
                .contains("https://openbao.github.io/openbao-helm"),
        "{repo:?}"
    );
    assert_eq!(
        repo.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("chart_repo"))
                .unwrap()
                + 1
        )
    );
}

/// Issue 10 (static seal): `[vault] seal = "static"` is read with flavor `openbao`, and
/// leaving `seal` out (or writing the default `shamir`) keeps the playbook's fingerprint.
#[test]
fn vault_seal_static_is_read_and_the_default_keeps_the_fingerprint() {
    use kubestrap::playbook::VaultSeal;
    let dir = tempfile::tempdir().unwrap();
    let bao = format!("{}\n[vault]\nflavor = \"openbao\"\n", common::MINIMAL);
    let plain = playbook_in(dir.path(), &bao);
    assert_eq!(plain.playbook.vault.seal, VaultSeal::Shamir);
    let shamir = playbook_in(dir.path(), &format!("{bao}seal = \"shamir\"\n"));
    assert_eq!(
        shamir.fingerprint, plain.fingerprint,
        "the default seal does not change the fingerprint"
    );
    let sealed = playbook_in(dir.path(), &format!("{bao}seal = \"static\"\n"));
    assert_eq!(sealed.playbook.vault.seal, VaultSeal::Static);
    assert_ne!(sealed.fingerprint, plain.fingerprint);
}

/// HashiCorp Vault has no static seal: a validation error at `seal`'s line naming the way out.
#[test]
fn vault_seal_static_with_flavor_vault_is_a_validation_error() {
    let text = format!("{}\n[vault]\nseal = \"static\"\n", common::MINIMAL);
    let found = problems(&text);
    let seal = find(&found, "vault.seal");
    assert!(
        seal.message.contains("flavor = \"openbao\"")
            && seal.message.contains("HashiCorp Vault has no static seal"),
        "{seal:?}"
    );
    assert_eq!(
        seal.line,
        Some(text.lines().position(|l| l.starts_with("seal")).unwrap() + 1)
    );
}

/// A misspelt seal is reported at its line with the nearest seal, like every enum.
#[test]
fn vault_seal_typo_names_its_key_line_and_nearest_seal() {
    let text = format!(
        "{}\n[vault]\nflavor = \"openbao\"\nseal = \"statc\"\n",
        common::MINIMAL
    );
    let found = problems(&text);
    let seal = find(&found, "vault.seal");
    assert!(seal.message.contains("found `statc`"), "{seal:?}");
    assert_eq!(seal.suggestion.as_deref(), Some("static"));
    assert_eq!(
        seal.line,
        Some(text.lines().position(|l| l.starts_with("seal")).unwrap() + 1)
    );
}
