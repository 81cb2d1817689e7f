//! Precise playbook errors (issue 11): every type, enum and duration error names its dotted key
//! (`vault.key_shares`, not `vault`), says what was expected and what was found, with
//! file:line:col and a did-you-mean for enum values; one error no longer hides the others.

use kubestrap::playbook::Problem;
use kubestrap_test_support::{self as common, kubestrap_bin};

#[path = "support/problems.rs"]
mod support;
use support::find;

fn problems(text: &str) -> Vec<Problem> {
    support::problems_at(text, "kubestrap.toml")
}

const BAD_TYPES: &str = include_str!("fixtures/playbooks/bad-types.toml");

#[test]
fn type_enum_and_duration_errors_name_the_field_not_the_section() {
    let found = problems(BAD_TYPES);
    let provider = find(&found, "cluster.provider");
    assert_eq!((provider.line, provider.column), (Some(3), Some(12)));
    assert!(
        provider.message.contains("found `k3s-locl`") && provider.message.starts_with("expected"),
        "{provider:?}"
    );
    assert_eq!(provider.suggestion.as_deref(), Some("k3s-local"));
    let shares = find(&found, "vault.key_shares");
    assert_eq!((shares.line, shares.column), (Some(12), Some(14)));
    assert_eq!(
        shares.message,
        "expected a whole number from 0 to 255, found string \"five\""
    );
    let access = find(&found, "vault.access");
    assert_eq!(access.suggestion.as_deref(), Some("port-forward"));
    let interval = find(&found, "flux.interval");
    assert!(
        interval.message.contains("expected a duration string"),
        "{interval:?}"
    );
    let node_ready = find(&found, "timeouts.node_ready");
    assert!(node_ready.message.contains("5 mins"), "{node_ready:?}");
    let required = find(&found, "secrets[0].required");
    assert_eq!(required.line, Some(23));
    assert_eq!(found.len(), 6, "nothing but the six bad fields: {found:#?}");
    for p in &found {
        assert!(
            !["cluster", "vault", "flux", "secrets", "timeouts"].contains(&p.key.as_str()),
            "a problem names only its section: {p:?}"
        );
    }
}

#[test]
fn one_type_error_no_longer_hides_the_other_problems() {
    // Two type errors in one section, a nested table's type error, a value check elsewhere.
    let text = include_str!("fixtures/playbooks/two-type-errors-and-a-value-check.toml");
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["flux.path", "vault.key_shares", "vault.key_threshold"],
        "{found:#?}"
    );
}

#[test]
fn a_nested_tables_field_and_a_missing_required_field_get_their_dotted_keys() {
    let text = include_str!("fixtures/playbooks/nested-table-and-missing-required.toml");
    let found = problems(text);
    let port = find(&found, "cluster.ssh.port");
    assert_eq!((port.line, port.column), (Some(7), Some(8)));
    let host = find(&found, "cluster.ssh.host");
    assert!(host.message.contains("required key is missing"), "{host:?}");
}

#[test]
fn the_cli_prints_file_line_col_dotted_key_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_playbook(dir.path(), BAD_TYPES);
    let out = common::run(&kubestrap_bin!(), &["plan"], dir.path(), &[]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(
            "kubestrap.toml:12:14: `vault.key_shares`: expected a whole number from 0 to 255, found string \"five\""
        ),
        "{all}"
    );
    assert!(
        all.contains("`cluster.provider`") && all.contains("(did you mean `k3s-local`?)"),
        "{all}"
    );
    assert!(!dir.path().join(".kubestrap").exists());
}
