//! The bootstrap completes while the sandbox's API fails 10% of requests (500/503/429).

use kubestrap_test_support::{Bootstrap, Options, kubestrap_bin, text};

#[test]
fn ten_percent_transient_api_faults_the_run_completes() {
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            faults: Some("seed=7,api_error_rate=0.1,api_error=503|500|429".into()),
            ..Options::default()
        },
    );
    let out = fx.apply_all_done();
    // The faults really happened: retries or watch errors name the injected failures.
    let all = text(&out);
    let seen = [
        "fault injection",
        "Internal Server Error",
        "Service Unavailable",
        "Too Many Requests",
    ]
    .iter()
    .filter(|needle| all.contains(*needle))
    .count();
    assert!(seen > 0, "no injected fault was observed: {all}");
}
