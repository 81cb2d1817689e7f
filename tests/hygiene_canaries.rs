//! Secret-hygiene gaps (issue 11), each proven with a canary planted where the gap was.

use kubestrap_test_support::{self as common, kubestrap_bin};

const CANARY: &str = "panic-canary-7f3a91c2";

#[test]
fn a_panicking_steps_message_is_redacted_in_checkpoint_output_and_panic_report() {
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_playbook(dir.path(), common::MINIMAL);
    std::fs::write(
        dir.path().join("steps.toml"),
        "[[step]]\nid = \"s1\"\nphase = \"infrastructure\"\nsecrets = [\"KS_TEST_TOKEN\"]\npanic_with_secret = \"KS_TEST_TOKEN\"\n",
    )
    .unwrap();
    let out = common::run(
        &kubestrap_bin!(),
        &["apply", "--synthetic-steps", "steps.toml"],
        dir.path(),
        &[("KS_TEST_TOKEN", CANARY)],
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("panicked") && all.contains("[redacted KS_TEST_TOKEN]"),
        "the panic is reported, masked:\n{all}"
    );
    assert!(
        !all.contains(CANARY),
        "the canary reached the output:\n{all}"
    );
    let mut checkpoint = String::new();
    for entry in std::fs::read_dir(dir.path().join(".kubestrap/test")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            checkpoint.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(checkpoint.contains("ended abnormally"), "{checkpoint}");
    assert!(
        !checkpoint.contains(CANARY),
        "the canary reached the checkpoint:\n{checkpoint}"
    );
}
