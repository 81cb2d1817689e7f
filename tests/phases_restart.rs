//! Resume after a whole-cluster restart (issue 12): a finished bootstrap, the sandbox stopped
//! (`kubestrap sandbox down`, a node reboot), then `apply --resume` ends verified in one run,
//! three times in a row. Steps whose postcondition no longer holds are applied again with their
//! waits; a ClusterSecretStore that is `InvalidProviderConfig` while Vault is being unsealed is
//! converging, not a failure.

use std::process::{Command, Stdio};

use kubestrap_test_support::{Bootstrap, Options, STEPS, finished, kubestrap_bin, text};

#[test]
fn resume_after_a_cluster_restart_ends_verified_three_times_in_a_row() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    for round in 1..=3 {
        let down = Command::new(kubestrap_bin!())
            .args(["sandbox", "down", "--dir"])
            .arg(fx.sandbox_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(down.status.success(), "round {round}: {}", text(&down));
        let out = fx.run(&["apply", "--resume", "--output", "json"], true);
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let steps = finished(&out);
        assert_eq!(steps.len(), STEPS, "round {round}: {}", text(&out));
        assert!(
            steps
                .iter()
                .all(|s| s["status"] == "done" || s["status"] == "skipped"),
            "round {round}: {}",
            text(&out)
        );
        // The cluster really came back: k3s.install was applied again, not skipped.
        let k3s = steps.iter().find(|s| s["step"] == "k3s.install").unwrap();
        assert_eq!(k3s["status"], "done", "round {round}: {}", text(&out));
    }
}
