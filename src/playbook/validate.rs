//! Value checks that types alone cannot express, run before anything touches a cluster.

use std::collections::BTreeSet;

use super::model::{Playbook, Provider, VaultAccess, VaultFlavor, VaultSeal};
use super::schema::nearest;

/// A failed check, located by key path; [`super::load`] turns it into a [`super::Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub key: String,
    pub message: String,
    pub suggestion: Option<String>,
}

fn finding(key: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        key: key.into(),
        message: message.into(),
        suggestion: None,
    }
}

/// Every problem with the values of `pb`.
pub(crate) fn validate(pb: &Playbook) -> Vec<Finding> {
    let mut out = Vec::new();
    cluster(pb, &mut out);
    flux(pb, &mut out);
    url_credentials(pb, &mut out);
    vault(pb, &mut out);
    names(pb, &mut out);
    eso_chart(pb, &mut out);
    secrets(pb, &mut out);
    pass_env(pb, &mut out);
    apps(pb, &mut out);
    timeouts(pb, &mut out);
    out
}

fn cluster(pb: &Playbook, out: &mut Vec<Finding>) {
    let c = &pb.cluster;
    if !is_dns_label(&c.name) {
        out.push(finding(
            "cluster.name",
            format!("{:?} is not a valid cluster name: use lowercase letters, digits and '-' (at most 63)", c.name),
        ));
    }
    if c.k3s_exec.is_some() && !c.provider.installs_k3s() {
        out.push(finding(
            "cluster.k3s_exec",
            format!(
                "provider {:?} does not install k3s: remove k3s_exec",
                c.provider.as_str()
            ),
        ));
    }
    if let Some(exec) = &c.k3s_exec
        && let Some(flag) = k3s_exec_secret(exec)
    {
        out.push(finding(
            "cluster.k3s_exec",
            format!(
                "{flag} carries a secret, which would reach the ssh command line, the plan and the checkpoint; reference a declared secret instead, e.g. `--token ${{K3S_TOKEN}}` with a [[secrets]] entry env = \"K3S_TOKEN\" (kubestrap hands its value to the installer in the environment, never on a command line), or keep it on the host: --token-file /etc/rancher/k3s/token (a root-only file), or the key in /etc/rancher/k3s/config.yaml"
            ),
        ));
    }
    for name in c
        .k3s_exec
        .as_deref()
        .map(super::model::k3s_exec_secret_refs)
        .unwrap_or_default()
    {
        if !pb.secrets.iter().any(|s| s.env == name) {
            out.push(finding(
                "cluster.k3s_exec",
                format!(
                    "${{{name}}} names no declared secret: add a [[secrets]] entry with env = \"{name}\" (its vault_path keeps it in Vault too), or remove the reference"
                ),
            ));
        } else if !name.starts_with("K3S_") {
            out.push(finding(
                "cluster.k3s_exec",
                format!(
                    "${{{name}}}: the k3s install script keeps only K3S_* variables for the k3s service, so k3s would never see it; declare the secret as env = \"K3S_{name}\" and reference ${{K3S_{name}}}"
                ),
            ));
        }
    }
    match c.provider {
        Provider::K3sLocal | Provider::K3sSsh => {
            if c.k3s_version.is_none() {
                out.push(finding(
                    "cluster.k3s_version",
                    format!("provider {:?} installs k3s and needs a pinned version, e.g. k3s_version = \"v1.33.1+k3s1\"", c.provider.as_str()),
                ));
            }
        }
        Provider::Sandbox | Provider::Existing => {
            if c.k3s_version.is_some() {
                out.push(finding(
                    "cluster.k3s_version",
                    format!(
                        "provider {:?} does not install k3s: remove k3s_version",
                        c.provider.as_str()
                    ),
                ));
            }
        }
    }
    match (c.provider, &c.ssh) {
        (Provider::K3sSsh, None) => out.push(finding(
            "cluster.ssh",
            "provider \"k3s-ssh\" needs a [cluster.ssh] table with at least host = \"…\"",
        )),
        (Provider::K3sSsh, Some(ssh)) if ssh.host.trim().is_empty() => {
            out.push(finding("cluster.ssh.host", "ssh host must not be empty"));
        }
        (p, Some(_)) if p != Provider::K3sSsh => out.push(finding(
            "cluster.ssh",
            "[cluster.ssh] is only used with provider = \"k3s-ssh\": remove it or change the provider",
        )),
        _ => {}
    }
    match (c.provider, &pb.sandbox) {
        (Provider::Sandbox, sandbox) => {
            if !cfg!(feature = "sandbox") {
                out.push(finding(
                    "cluster.provider",
                    "this kubestrap was built without the sandbox (cargo feature `sandbox`): \
                     use k3s-local, k3s-ssh or existing, or a build with default features",
                ));
            }
            let repos = sandbox.as_ref().map(|s| &s.git_repos);
            if !repos.is_some_and(|r| r.contains_key(&pb.flux.git_url)) {
                out.push(finding(
                    "flux.git_url",
                    format!(
                        "the sandbox has no network: map {:?} to a local directory in [sandbox] git_repos",
                        pb.flux.git_url
                    ),
                ));
            }
        }
        (_, Some(_)) => out.push(finding(
            "sandbox",
            "[sandbox] is only used with provider = \"sandbox\": remove it or change the provider",
        )),
        (_, None) => {}
    }
}

/// The k3s flag in `exec` that carries a secret value, if any: a join token, S3 keys, or a
/// datastore endpoint with a password (`postgres://user:pass@…`).
fn k3s_exec_secret(exec: &str) -> Option<String> {
    const SECRET_FLAGS: [&str; 6] = [
        "--token",
        "-t",
        "--agent-token",
        "--etcd-s3-access-key",
        "--etcd-s3-secret-key",
        "--vpn-auth",
    ];
    let args: Vec<&str> = exec.split_whitespace().collect();
    for (i, arg) in args.iter().enumerate() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (*arg, None),
        };
        let value = inline
            .or_else(|| args.get(i + 1).copied())
            .unwrap_or_default();
        // `${K3S_TOKEN}`: a declared secret, handed over in the environment (checked above).
        if value.contains("${") {
            continue;
        }
        if SECRET_FLAGS.contains(&flag) {
            return Some(format!("`{flag}`"));
        }
        if flag == "--datastore-endpoint"
            && (url_credentials_in(value).is_some() || value.contains("password="))
        {
            return Some("`--datastore-endpoint` with a password".to_owned());
        }
    }
    None
}

fn flux(pb: &Playbook, out: &mut Vec<Finding>) {
    let f = &pb.flux;
    if !["https://", "http://", "ssh://"]
        .iter()
        .any(|p| f.git_url.starts_with(p))
    {
        out.push(finding(
            "flux.git_url",
            format!(
                "{:?} is not a Git URL: use https://host/org/repo",
                f.git_url
            ),
        ));
    }
    if f.branch.trim().is_empty() {
        out.push(finding("flux.branch", "branch must not be empty"));
    }
    if f.path.trim().is_empty() || f.path.starts_with('/') {
        out.push(finding(
            "flux.path",
            format!(
                "{:?} must be a path inside the repository, e.g. \"clusters/prod\"",
                f.path
            ),
        ));
    }
    if let Some(sum) = &f.install_sha256
        && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        out.push(finding(
            "flux.install_sha256",
            "must be 64 hex characters (the sha256 of install.yaml)",
        ));
    }
    if let Some(src) = &f.install_manifest
        && (src.trim().is_empty()
            || src.contains("://") && !src.starts_with("https://") && !src.starts_with("http://"))
    {
        out.push(finding(
            "flux.install_manifest",
            format!("{src:?} is neither an http(s) URL nor a file path"),
        ));
    }
    if let Some(src) = &f.install_manifest
        && src.starts_with("sandbox:")
        && pb.cluster.provider != Provider::Sandbox
    {
        out.push(finding(
            "flux.install_manifest",
            format!("{src:?} names the sandbox's own copy, which only exists with provider = \"sandbox\""),
        ));
    }
    if f.interval.get().is_zero() {
        out.push(finding("flux.interval", "must be greater than zero"));
    }
    declared(pb, "flux.token_env", &f.token_env, out);
    if let Some(from) = &pb.git_auth.from_secret {
        declared(pb, "git_auth.from_secret", from, out);
    }
}

/// Every URL the playbook names must carry no credentials: they would sit in the playbook (and
/// its Git history), the checkpoint's payloads, the plan and the cluster's objects.
fn url_credentials(pb: &Playbook, out: &mut Vec<Finding>) {
    let git_where = format!(
        "put the token in the environment variable {:?} (declared in [[secrets]], named by [flux] token_env) and the user name in [flux] git_username",
        pb.flux.token_env
    );
    let mut urls: Vec<(&str, &str, String)> = vec![
        ("flux.git_url", pb.flux.git_url.as_str(), git_where),
        (
            "vault.chart_repo",
            pb.vault.chart_repo.as_str(),
            "use a public chart repository URL; private repositories are not supported yet".into(),
        ),
        (
            "external_secrets.chart_repo",
            pb.external_secrets.chart_repo.as_str(),
            "use a public chart repository URL; private repositories are not supported yet".into(),
        ),
    ];
    if let Some(m) = &pb.flux.install_manifest {
        urls.push((
            "flux.install_manifest",
            m.as_str(),
            "use a public URL and pin it with install_sha256, or a local file".into(),
        ));
    }
    if let Some(a) = &pb.vault.address {
        urls.push((
            "vault.address",
            a.as_str(),
            "kubestrap authenticates to Vault with the root token from sys/init; the address carries none".into(),
        ));
    }
    for (key, url, remedy) in urls {
        if let Some(what) = url_credentials_in(url) {
            out.push(finding(
                key,
                format!("the URL carries {what} before '@'; remove it: {remedy}"),
            ));
        }
    }
}

/// What credentials `url` carries in its userinfo, if any: a password (`user:pass@`) anywhere,
/// or any user part in an http(s) URL (`https://TOKEN@host` is a token too). `ssh://git@host`
/// names a login user and carries no secret.
fn url_credentials_in(url: &str) -> Option<&'static str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, _) = authority.rsplit_once('@')?;
    if userinfo.contains(':') {
        Some("a user name and password or token")
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        Some("a user name or token")
    } else {
        None
    }
}

fn declared(pb: &Playbook, key: &str, env: &str, out: &mut Vec<Finding>) {
    if pb.secrets.iter().any(|s| s.env == env) {
        return;
    }
    let envs: Vec<&str> = pb.secrets.iter().map(|s| s.env.as_str()).collect();
    let suggestion = nearest(env, &envs).map(str::to_owned);
    out.push(Finding {
        key: key.into(),
        message: format!("{env:?} is not declared: add a [[secrets]] entry with env = {env:?}"),
        suggestion,
    });
}

fn vault(pb: &Playbook, out: &mut Vec<Finding>) {
    let v = &pb.vault;
    // The other flavor's repository does not serve this flavor's chart: Flux would fail with
    // "chart not found" long after the plan.
    for other in [VaultFlavor::Vault, VaultFlavor::Openbao] {
        if other != v.flavor && v.chart_repo.trim_end_matches('/') == other.default_chart_repo() {
            out.push(finding(
                "vault.chart_repo",
                format!(
                    "{} has no `{}` chart (flavor {:?}): remove chart_repo to use {}, or set flavor = {:?}",
                    v.chart_repo,
                    v.flavor.chart(),
                    v.flavor.as_str(),
                    v.flavor.default_chart_repo(),
                    other.as_str()
                ),
            ));
        }
    }
    if v.seal == VaultSeal::Static && v.flavor == VaultFlavor::Vault {
        out.push(finding(
            "vault.seal",
            "\"static\" needs flavor = \"openbao\": HashiCorp Vault has no static seal (OpenBao 2.4+ has); set flavor = \"openbao\", or remove seal to use Shamir unseal keys",
        ));
    }
    if v.key_shares == 0 {
        out.push(finding("vault.key_shares", "must be at least 1"));
    }
    if v.key_threshold == 0 || v.key_threshold > v.key_shares {
        out.push(finding(
            "vault.key_threshold",
            format!(
                "must be between 1 and key_shares ({}), got {}",
                v.key_shares, v.key_threshold
            ),
        ));
    }
    for (key, mount) in [
        ("vault.kv_mount", &v.kv_mount),
        ("vault.auth_mount", &v.auth_mount),
    ] {
        if !is_vault_path(mount) {
            out.push(finding(
                key,
                format!("{mount:?} is not a mount path: use e.g. \"secret\""),
            ));
        }
    }
    match (v.access, &v.address) {
        (VaultAccess::Address, None) => out.push(finding(
            "vault.address",
            "access = \"address\" needs address = \"https://vault.example.com:8200\"",
        )),
        (VaultAccess::Address, Some(a))
            if !a.starts_with("https://") && !a.starts_with("http://") =>
        {
            out.push(finding(
                "vault.address",
                format!("{a:?} is not an http(s) URL"),
            ));
        }
        (VaultAccess::Address, Some(a)) if a.starts_with("http://") && !v.allow_http => {
            out.push(finding(
                "vault.address",
                format!(
                    "{a:?} is plain http: the root token and every bootstrap secret would cross the network unencrypted; use https://, or set allow_http = true in [vault] to accept that (the plan then warns)"
                ),
            ));
        }
        (VaultAccess::PortForward, _) if v.allow_http => out.push(finding(
            "vault.allow_http",
            "only used with access = \"address\" (a port-forward runs through the API server's TLS): remove it",
        )),
        (VaultAccess::PortForward, Some(_)) => out.push(finding(
            "vault.address",
            "address is only used with access = \"address\": remove it or change access",
        )),
        _ => {}
    }
}

fn names(pb: &Playbook, out: &mut Vec<Finding>) {
    let labels = [
        ("flux.namespace", &pb.flux.namespace),
        ("vault.namespace", &pb.vault.namespace),
        ("vault.release", &pb.vault.release),
        ("external_secrets.namespace", &pb.external_secrets.namespace),
        ("external_secrets.release", &pb.external_secrets.release),
    ];
    for (key, value) in labels {
        if !is_dns_label(value) {
            out.push(finding(
                key,
                format!("{value:?} is not a valid Kubernetes name (lowercase DNS label)"),
            ));
        }
    }
    let subdomains = [
        ("flux.bootstrap_secret", &pb.flux.bootstrap_secret),
        ("vault.keys_secret", &pb.vault.keys_secret),
        ("vault.eso_role", &pb.vault.eso_role),
        ("vault.eso_policy", &pb.vault.eso_policy),
        (
            "external_secrets.service_account",
            &pb.external_secrets.service_account,
        ),
        ("external_secrets.store", &pb.external_secrets.store),
        ("git_auth.external_secret", &pb.git_auth.external_secret),
    ];
    for (key, value) in subdomains {
        if !is_dns_subdomain(value) {
            out.push(finding(
                key,
                format!("{value:?} is not a valid Kubernetes object name"),
            ));
        }
    }
    if pb.git_auth.external_secret == pb.flux.bootstrap_secret {
        out.push(finding(
            "git_auth.external_secret",
            "must differ from flux.bootstrap_secret: the switch replaces one Secret with the other",
        ));
    }
}

fn secrets(pb: &Playbook, out: &mut Vec<Finding>) {
    let mut envs = BTreeSet::new();
    let mut tf_vars = BTreeSet::new();
    let mut locations = BTreeSet::new();
    for (i, s) in pb.secrets.iter().enumerate() {
        let at = |field: &str| format!("secrets[{i}].{field}");
        if !is_env_name(&s.env) {
            out.push(finding(
                at("env"),
                format!(
                    "{:?} is not an environment variable name: use A-Z, 0-9 and _",
                    s.env
                ),
            ));
        } else if !envs.insert(s.env.as_str()) {
            out.push(finding(at("env"), format!("{:?} is declared twice", s.env)));
        }
        let tf_var = s.tf_var();
        if !is_identifier(&tf_var) {
            out.push(finding(
                at("tf_var"),
                format!("{tf_var:?} is not a Terraform variable name"),
            ));
        } else if !tf_vars.insert(tf_var.clone()) {
            out.push(finding(
                at("tf_var"),
                format!("Terraform variable {tf_var:?} is used twice"),
            ));
        }
        if !is_vault_path(&s.vault_path) {
            out.push(finding(
                at("vault_path"),
                format!("{:?} is not a Vault path: use segments like \"bootstrap/github\" (letters, digits, '-', '_', '.'), none empty, \".\" or \"..\", without leading or trailing '/'", s.vault_path),
            ));
        }
        if s.vault_key.trim().is_empty() {
            out.push(finding(at("vault_key"), "must not be empty"));
        }
        if !locations.insert((s.vault_path.as_str(), s.vault_key.as_str())) {
            out.push(finding(
                at("vault_key"),
                format!(
                    "{}#{} is already the destination of another secret",
                    s.vault_path, s.vault_key
                ),
            ));
        }
    }
}

/// `[terraform] pass_env`: names or globs of environment variables; a declared secret is
/// never among them (it reaches Terraform only as a variable, on a pipe).
fn pass_env(pb: &Playbook, out: &mut Vec<Finding>) {
    use super::model::env_pattern_matches;
    for (i, pattern) in pb.terraform.pass_env.iter().enumerate() {
        let key = format!("terraform.pass_env[{i}]");
        let literal = pattern.replace('*', "");
        if pattern.is_empty()
            || pattern.chars().all(|c| c == '*')
            || !(literal.is_empty() || is_env_name(&literal.to_ascii_uppercase()))
            || literal
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'=')
        {
            out.push(finding(
                key,
                format!(
                    "{pattern:?} is not an environment variable name or glob: use e.g. \"AWS_*\" or \"HTTPS_PROXY\""
                ),
            ));
            continue;
        }
        let secrets: Vec<&str> = pb
            .secrets
            .iter()
            .map(|s| s.env.as_str())
            .filter(|env| env_pattern_matches(pattern, env))
            .collect();
        if !secrets.is_empty() {
            out.push(finding(
                key,
                format!(
                    "{pattern:?} matches the declared secret{} {}: secrets reach Terraform only as variables on a pipe, never through its environment; narrow the pattern",
                    if secrets.len() == 1 { "" } else { "s" },
                    secrets.join(", ")
                ),
            ));
        }
    }
}

fn apps(pb: &Playbook, out: &mut Vec<Finding>) {
    for (i, k) in pb.apps.kustomizations.iter().enumerate() {
        let ok = match k.split_once('/') {
            Some((ns, name)) => is_dns_label(ns) && is_dns_subdomain(name),
            None => is_dns_subdomain(k),
        };
        if !ok {
            out.push(finding(
                format!("apps.kustomizations[{i}]"),
                format!(
                    "{k:?} is not a Kustomization reference: use \"name\" or \"namespace/name\""
                ),
            ));
        }
    }
    for (i, ns) in pb.apps.external_secret_namespaces.iter().enumerate() {
        if !is_dns_label(ns) {
            out.push(finding(
                format!("apps.external_secret_namespaces[{i}]"),
                format!("{ns:?} is not a namespace name"),
            ));
        }
    }
}

fn timeouts(pb: &Playbook, out: &mut Vec<Finding>) {
    let t = &pb.timeouts;
    for (key, d) in [
        ("timeouts.node_ready", t.node_ready),
        ("timeouts.flux_ready", t.flux_ready),
        ("timeouts.vault_ready", t.vault_ready),
        ("timeouts.eso_ready", t.eso_ready),
        ("timeouts.reconcile", t.reconcile),
        ("timeouts.secret_sync", t.secret_sync),
        ("timeouts.terraform", t.terraform),
    ] {
        if d.get().is_zero() {
            out.push(finding(key, "must be greater than zero"));
        }
    }
}

/// An enum variant close to `value`, for "unknown variant" messages.
pub(crate) fn suggest_variant<'a>(value: &str, variants: &[&'a str]) -> Option<&'a str> {
    nearest(value, variants)
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Segments of letters, digits, `-`, `_` and `.`, none empty, `.` or `..`: a path that
/// resolves elsewhere (`bootstrap/../sys`) would make the ESO policy, Terraform and the checks
/// disagree about where a secret lives.
fn is_vault_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

/// The first external-secrets chart that serves `external-secrets.io/v1` (ESO v0.16.2 added
/// the v1 API beside v1beta1; 0.16.0 and 0.16.1 serve only v1beta1, 0.17.0 drops v1beta1).
/// kubestrap's ClusterSecretStore and ExternalSecret are v1 objects.
pub(crate) const ESO_FIRST_V1_CHART: (u64, u64, u64) = (0, 16, 2);

/// An exact chart version `[v]MAJOR.MINOR.PATCH[-pre][+build]` as numbers and whether it has a
/// pre-release; `None` for anything else (a semver range, which Flux also accepts).
fn exact_version(text: &str) -> Option<((u64, u64, u64), bool)> {
    let t = text.trim().strip_prefix('v').unwrap_or(text.trim());
    let t = t.split('+').next().unwrap_or(t);
    let (core, pre) = match t.split_once('-') {
        Some((c, _)) => (c, true),
        None => (t, false),
    };
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some((v, pre))
}

/// Whether the exact chart version `text` serves `external-secrets.io/v1`; `None` when it is
/// not an exact version (a range is Flux's to resolve).
pub(crate) fn eso_chart_serves_v1(text: &str) -> Option<bool> {
    let (v, pre) = exact_version(text)?;
    Some(v > ESO_FIRST_V1_CHART || (v == ESO_FIRST_V1_CHART && !pre))
}

fn eso_chart(pb: &Playbook, out: &mut Vec<Finding>) {
    let version = &pb.external_secrets.chart_version;
    if eso_chart_serves_v1(version) == Some(false) {
        let (a, b, c) = ESO_FIRST_V1_CHART;
        out.push(finding(
            "external_secrets.chart_version",
            format!(
                "external-secrets chart {version:?} does not serve external-secrets.io/v1, which kubestrap's ClusterSecretStore and ExternalSecrets use: set chart_version = \"{a}.{b}.{c}\" or later"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 9): a chart_version without the v1 API was accepted, and the run then
    /// failed on a real cluster at the first ClusterSecretStore.
    #[test]
    fn eso_chart_below_the_v1_api_is_rejected() {
        for old in ["0.16.1", "0.16.0", "0.9.20", "v0.15.1", "0.16.2-rc.1"] {
            assert_eq!(eso_chart_serves_v1(old), Some(false), "{old}");
        }
        for new in ["0.16.2", "0.17.0", "1.0.0", "v0.19.2", "0.16.3+build.1"] {
            assert_eq!(eso_chart_serves_v1(new), Some(true), "{new}");
        }
        for range in ["*", ">=0.16.2", "0.16.x", "0.16"] {
            assert_eq!(eso_chart_serves_v1(range), None, "{range}");
        }
    }

    #[test]
    fn name_rules() {
        assert!(is_dns_label("flux-system"));
        assert!(!is_dns_label("Flux"));
        assert!(!is_dns_label("-a"));
        assert!(is_env_name("GITHUB_TOKEN"));
        assert!(!is_env_name("github_token"));
        assert!(is_vault_path("bootstrap/github"));
        assert!(!is_vault_path("/bootstrap"));
        assert!(!is_vault_path("a//b"));
        assert!(!is_vault_path("bootstrap/../sys"));
        assert!(!is_vault_path("./bootstrap"));
        assert!(!is_vault_path("bootstrap/."));
        assert!(is_vault_path("bootstrap/v1.2"));
        assert_eq!(url_credentials_in("https://git.example/org/r"), None);
        assert!(url_credentials_in("https://user:tok@git.example/org/r").is_some());
        assert!(url_credentials_in("https://ghp_tok@git.example/org/r").is_some());
        assert_eq!(url_credentials_in("ssh://git@github.com/org/r"), None);
        assert!(url_credentials_in("ssh://git:pw@github.com/org/r").is_some());
        assert_eq!(url_credentials_in("https://git.example/a@b"), None);
        use super::super::model::env_pattern_matches as m;
        assert!(m("AWS_*", "AWS_SECRET_ACCESS_KEY"));
        assert!(m("TF_TOKEN_*", "TF_TOKEN_app_terraform_io"));
        assert!(m("HTTPS_PROXY", "HTTPS_PROXY"));
        assert!(!m("HTTPS_PROXY", "HTTPS_PROXY2"));
        assert!(m("*_PROXY", "NO_PROXY"));
        assert!(m("A*B*C", "AxxBxxC"));
        assert!(!m("A*B*C", "AxxC"));
        assert!(!m("AWS_*", "XAWS_KEY"));
        assert_eq!(k3s_exec_secret("server --disable traefik"), None);
        assert!(k3s_exec_secret("server --token K10abc").is_some());
        assert!(k3s_exec_secret("server --token=K10abc").is_some());
        assert!(
            k3s_exec_secret("server --datastore-endpoint=postgres://u:p@db:5432/k3s").is_some()
        );
        assert_eq!(
            k3s_exec_secret("server --datastore-endpoint postgres://db:5432/k3s"),
            None
        );
        assert_eq!(
            k3s_exec_secret("server --token-file /etc/rancher/k3s/token"),
            None
        );
        assert_eq!(k3s_exec_secret("server --token ${K3S_TOKEN}"), None);
        assert_eq!(
            k3s_exec_secret("server --datastore-endpoint=postgres://k3s:${K3S_DB_PASSWORD}@db/k3s"),
            None
        );
        assert_eq!(
            super::super::model::k3s_exec_secret_refs(
                "server --token ${K3S_TOKEN} --agent-token=${K3S_AGENT_TOKEN} -t ${K3S_TOKEN} ${"
            ),
            ["K3S_TOKEN", "K3S_AGENT_TOKEN"]
        );
    }
}
