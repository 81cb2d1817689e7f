//! The walker, driven through the library with synthetic steps: ordering, the phase barrier,
//! the concurrency bound, failure handling, retries, interruption, outputs and resume.

use kubestrap_test_support as common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubestrap::engine::{
    self, Action, ApplyRequest, Checkpoint, CheckpointMode, Engine, GraphProblem, Phase, Recorder,
    RetryPolicy, RunEnv, RunEvent, RunStatus, Step, StepContext, StepEnd, StepError, StepOutcome,
    StepStatus, Verified,
};
use serde::Serialize;

#[derive(Debug, Default)]
struct Tracker {
    log: Mutex<Vec<(String, &'static str, Instant)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Tracker {
    fn note(&self, id: &str, what: &'static str) {
        self.log
            .lock()
            .unwrap()
            .push((id.to_owned(), what, Instant::now()));
    }
    fn at(&self, id: &str, what: &str) -> Instant {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(i, w, _)| i == id && *w == what)
            .map(|e| e.2)
            .unwrap_or_else(|| panic!("{id} never {what}"))
    }
    fn count(&self, id: &str, what: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, w, _)| i == id && *w == what)
            .count()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fail {
    Never,
    Transient(u32),
    Permanent,
}

#[derive(Debug, Serialize)]
struct Probe {
    id: String,
    #[serde(skip)]
    sleep: Duration,
    #[serde(skip)]
    fail: Fail,
    #[serde(skip)]
    tracker: Arc<Tracker>,
    #[serde(skip)]
    attempts: AtomicU32,
    #[serde(skip)]
    reads: Option<String>,
}

impl Probe {
    fn arc(id: &str, ms: u64, fail: Fail, tracker: &Arc<Tracker>) -> Arc<dyn Step> {
        Arc::new(Self {
            id: id.into(),
            sleep: Duration::from_millis(ms),
            fail,
            tracker: Arc::clone(tracker),
            attempts: AtomicU32::new(0),
            reads: None,
        })
    }
}

/// A sealed DAG of probes: `(id, phase, dependencies, milliseconds of work, how it fails)`.
fn probes(t: &Arc<Tracker>, spec: &[(&str, Phase, &[&str], u64, Fail)]) -> Engine<engine::Built> {
    let mut e = Engine::new();
    for &(id, phase, deps, ms, fail) in spec {
        e.add(id, phase, deps, Probe::arc(id, ms, fail, t));
    }
    e.seal().unwrap()
}

#[async_trait::async_trait]
impl Step for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn payload(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap()
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            multiplier: 2,
            max_elapsed: Duration::from_secs(10),
        }
    }
    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![Action::run(format!("probe {}", self.id))])
    }
    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.tracker.note(&self.id, "start");
        let now = self.tracker.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.tracker.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.tracker.running.fetch_sub(1, Ordering::SeqCst);
        self.tracker.note(&self.id, "end");
        if let Some(dep) = &self.reads {
            let v: serde_json::Value = ctx.output(dep)?;
            assert_eq!(v["from"], dep.as_str());
        }
        match self.fail {
            Fail::Permanent => Err(StepError::permanent(format!("{} is broken", self.id))),
            Fail::Transient(n) if attempt <= n => {
                Err(StepError::transient(format!("{} blinked", self.id)))
            }
            _ => StepOutcome::with_outputs(true, &serde_json::json!({ "from": self.id })),
        }
    }
    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        self.tracker.note(&self.id, "verify");
        Ok(Verified::Holds)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    env: RunEnv,
    recorder: Recorder,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook_in(dir.path(), common::MINIMAL);
    let env = RunEnv::new(pb);
    let recorder = Recorder::new();
    env.events.subscribe(recorder.subscriber());
    Setup {
        _dir: dir,
        env,
        recorder,
    }
}

async fn apply(engine: &Engine<engine::Built>, s: &Setup, concurrency: usize) -> engine::RunReport {
    let req = ApplyRequest {
        checkpoint: CheckpointMode::Fresh,
        only: Vec::new(),
        concurrency,
    };
    tokio::time::timeout(Duration::from_secs(30), engine::apply(engine, &s.env, &req))
        .await
        .expect("run timed out")
        .unwrap()
}

#[tokio::test]
async fn dependencies_and_the_phase_barrier_order_the_steps() {
    let t = Arc::new(Tracker::default());
    let engine = probes(
        &t,
        &[
            ("a", Phase::Infrastructure, &[], 60, Fail::Never),
            ("b", Phase::Infrastructure, &["a"], 10, Fail::Never),
            ("c", Phase::Infrastructure, &[], 120, Fail::Never),
            ("d", Phase::Secrets, &[], 10, Fail::Never),
            ("e", Phase::Verify, &["d"], 10, Fail::Never),
        ],
    );
    let s = setup();
    let report = apply(&engine, &s, 4).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert!(
        t.at("b", "start") >= t.at("a", "end"),
        "b ran before its dependency a finished"
    );
    // d has no dependencies, yet waits for the whole infrastructure phase.
    assert!(
        t.at("d", "start") >= t.at("c", "end"),
        "phase barrier broken"
    );
    assert!(
        t.at("d", "start") >= t.at("b", "end"),
        "phase barrier broken"
    );
    assert!(t.at("e", "start") >= t.at("d", "end"));
    let phases: Vec<Phase> = s
        .recorder
        .events()
        .iter()
        .filter_map(|e| {
            if let RunEvent::PhaseStarted { phase, .. } = e {
                Some(*phase)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        phases,
        vec![Phase::Infrastructure, Phase::Secrets, Phase::Verify]
    );
}

#[tokio::test]
async fn concurrency_is_bounded_and_independent_steps_overlap() {
    for bound in [1usize, 3, 6] {
        let t = Arc::new(Tracker::default());
        let mut e = Engine::new();
        for i in 0..6 {
            let id = format!("s{i}");
            e.add(
                id.as_str(),
                Phase::Infrastructure,
                &[],
                Probe::arc(&id, 80, Fail::Never, &t),
            );
        }
        let engine = e.seal().unwrap();
        let s = setup();
        let report = apply(&engine, &s, bound).await;
        assert_eq!(report.status, RunStatus::Succeeded);
        assert_eq!(
            t.max_running.load(Ordering::SeqCst),
            bound,
            "concurrency {bound}"
        );
    }
}

#[tokio::test]
async fn a_failure_starts_nothing_new_lets_running_steps_finish_and_is_recorded() {
    let t = Arc::new(Tracker::default());
    let engine = probes(
        &t,
        &[
            ("fails", Phase::Infrastructure, &[], 20, Fail::Permanent),
            ("slow", Phase::Infrastructure, &[], 200, Fail::Never),
            ("queued", Phase::Infrastructure, &[], 10, Fail::Never),
            ("after", Phase::Infrastructure, &["fails"], 10, Fail::Never),
            ("later", Phase::Secrets, &[], 10, Fail::Never),
        ],
    );
    let s = setup();
    let report = apply(&engine, &s, 2).await;
    assert_eq!(report.status, RunStatus::Failed);
    let (step, msg) = report.root_cause.clone().unwrap();
    assert_eq!(step.unwrap().as_str(), "fails");
    assert!(msg.contains("fails is broken"));
    assert_eq!(
        report.step("slow").unwrap().end,
        StepEnd::Done,
        "running step was not allowed to finish"
    );
    for never in ["queued", "after", "later"] {
        assert_eq!(
            t.count(never, "start"),
            0,
            "{never} started after the failure"
        );
    }
    assert_eq!(
        t.count("fails", "start"),
        1,
        "permanent errors are not retried"
    );
    let cp = Checkpoint::load(&Checkpoint::path_in(&s.env.playbook.cluster_dir()))
        .unwrap()
        .unwrap();
    assert_eq!(cp.steps["fails"].status, StepStatus::Failed);
    assert_eq!(
        cp.steps["fails"].last_error.as_deref(),
        Some("fails is broken")
    );
    assert_eq!(cp.steps["slow"].status, StepStatus::Done);
    assert!(!cp.steps.contains_key("queued"));
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff() {
    let t = Arc::new(Tracker::default());
    let engine = probes(
        &t,
        &[
            ("flaky", Phase::Infrastructure, &[], 1, Fail::Transient(2)),
            ("hopeless", Phase::Secrets, &[], 1, Fail::Transient(99)),
        ],
    );
    let s = setup();
    let report = apply(&engine, &s, 4).await;
    let flaky = report.step("flaky").unwrap();
    assert_eq!((flaky.end, flaky.attempts), (StepEnd::Done, 3));
    let delays: Vec<Duration> = s
        .recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepRetrying { step, delay, .. } if step.as_str() == "flaky" => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 2);
    // Equal jitter: between half and all of 40ms, then of 80ms.
    assert!(
        delays[0] >= Duration::from_millis(20) && delays[0] <= Duration::from_millis(40),
        "{delays:?}"
    );
    assert!(
        delays[1] >= Duration::from_millis(40) && delays[1] <= Duration::from_millis(80),
        "{delays:?}"
    );
    let log = t.log.lock().unwrap().clone();
    let starts: Vec<Instant> = log
        .iter()
        .filter(|(i, w, _)| i == "flaky" && *w == "start")
        .map(|e| e.2)
        .collect();
    assert!(
        starts[1] - starts[0] >= delays[0],
        "the retry did not wait for its backoff"
    );
    let hopeless = report.step("hopeless").unwrap();
    assert_eq!((hopeless.end, hopeless.attempts), (StepEnd::Failed, 3));
    assert!(
        hopeless
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts")
    );
}

#[tokio::test]
async fn an_interrupt_stops_running_steps_and_starts_nothing_new() {
    let t = Arc::new(Tracker::default());
    let engine = probes(
        &t,
        &[
            ("long", Phase::Infrastructure, &[], 10_000, Fail::Never),
            ("next", Phase::Secrets, &[], 1, Fail::Never),
        ],
    );
    let s = setup();
    let token = s.env.interrupt.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    let report = apply(&engine, &s, 4).await;
    assert_eq!(report.status, RunStatus::Interrupted);
    assert_eq!(report.step("long").unwrap().end, StepEnd::Interrupted);
    assert_eq!(t.count("next", "start"), 0);
    let cp = Checkpoint::load(&Checkpoint::path_in(&s.env.playbook.cluster_dir()))
        .unwrap()
        .unwrap();
    assert_eq!(cp.steps["long"].status, StepStatus::Interrupted);
}

#[tokio::test]
async fn outputs_flow_to_dependents_and_resume_verifies_instead_of_reapplying() {
    let t = Arc::new(Tracker::default());
    let build = |t: &Arc<Tracker>| {
        let mut e = Engine::new();
        e.add(
            "a",
            Phase::Infrastructure,
            &[],
            Probe::arc("a", 1, Fail::Never, t),
        )
        .add(
            "b",
            Phase::Secrets,
            &["a"],
            Arc::new(Probe {
                id: "b".into(),
                sleep: Duration::from_millis(1),
                fail: Fail::Never,
                tracker: Arc::clone(t),
                attempts: AtomicU32::new(0),
                reads: Some("a".into()),
            }),
        );
        e.seal().unwrap()
    };
    let engine = build(&t);
    let s = setup();
    assert_eq!(apply(&engine, &s, 4).await.status, RunStatus::Succeeded);
    // Resume with a fresh tracker: both verified, neither applied, and b's outputs still there.
    let t2 = Arc::new(Tracker::default());
    let engine = build(&t2);
    let req = ApplyRequest {
        checkpoint: CheckpointMode::Resume,
        only: Vec::new(),
        concurrency: 4,
    };
    let report = engine::apply(&engine, &s.env, &req).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    for id in ["a", "b"] {
        assert_eq!(report.step(id).unwrap().end, StepEnd::Skipped);
        assert_eq!(t2.count(id, "verify"), 1);
        assert_eq!(t2.count(id, "start"), 0, "{id} was re-applied");
    }
    assert_eq!(report.step("b").unwrap().outputs["from"], "b");
}

#[tokio::test]
async fn an_existing_checkpoint_needs_resume_or_fresh() {
    let t = Arc::new(Tracker::default());
    let engine = probes(&t, &[("a", Phase::Infrastructure, &[], 1, Fail::Never)]);
    let s = setup();
    apply(&engine, &s, 1).await;
    let req = ApplyRequest::default();
    let err = engine::apply(&engine, &s.env, &req).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("pass --resume to continue it or --fresh"),
        "{err}"
    );
}

#[test]
fn seal_reports_every_cycle_unknown_dependency_and_phase_inversion_at_once() {
    let t = Arc::new(Tracker::default());
    let p = |id: &str| Probe::arc(id, 0, Fail::Never, &t);
    let mut e = Engine::new();
    e.add("a", Phase::Infrastructure, &["b"], p("a"))
        .add("b", Phase::Infrastructure, &["a"], p("b"))
        .add("c", Phase::Infrastructure, &["e"], p("c"))
        .add("d", Phase::Infrastructure, &["c"], p("d"))
        .add("e", Phase::Infrastructure, &["d"], p("e"))
        .add("f", Phase::Infrastructure, &["vault.intt"], p("f"))
        .add("vault.init", Phase::Infrastructure, &[], p("vault.init"))
        .add("g", Phase::Infrastructure, &["late"], p("g"))
        .add("late", Phase::Apps, &[], p("late"))
        .add("a", Phase::Apps, &[], p("a"));
    let errors = e.seal().unwrap_err();
    let cycles: Vec<_> = errors
        .problems
        .iter()
        .filter(|p| matches!(p, GraphProblem::Cycle { .. }))
        .collect();
    assert_eq!(cycles.len(), 2, "{errors}");
    assert!(errors.problems.contains(&GraphProblem::Cycle {
        steps: vec!["a".into(), "b".into()],
        edges: vec![("a".into(), "b".into()), ("b".into(), "a".into())],
    }));
    assert!(errors.problems.contains(&GraphProblem::Cycle {
        steps: vec!["c".into(), "d".into(), "e".into()],
        edges: vec![
            ("c".into(), "e".into()),
            ("d".into(), "c".into()),
            ("e".into(), "d".into())
        ],
    }));
    assert!(errors.problems.contains(&GraphProblem::UnknownDependency {
        step: "f".into(),
        dependency: "vault.intt".into(),
        suggestion: Some("vault.init".into()),
    }));
    assert!(errors.problems.iter().any(
        |p| matches!(p, GraphProblem::LaterPhaseDependency { step, .. } if step.as_str() == "g")
    ));
    assert!(
        errors
            .problems
            .contains(&GraphProblem::DuplicateStep { id: "a".into() })
    );
    let text = errors.to_string();
    assert!(
        text.contains("dependency cycle between c, d, e; edges: c -> e, d -> c, e -> d"),
        "{text}"
    );
}

#[test]
fn the_real_registry_is_a_valid_five_phase_dag() {
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook_in(dir.path(), common::MINIMAL);
    let engine = kubestrap::steps::build(&pb).unwrap();
    assert_eq!(engine.len(), 26);
    for phase in Phase::ALL {
        assert!(engine.phase_nodes(phase).count() > 0, "{phase} is empty");
    }
    let users = engine.secret_users();
    assert_eq!(
        users["KS_TEST_TOKEN"]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        vec!["flux.source", "secrets.terraform"]
    );
}

#[tokio::test]
async fn a_missing_existing_cluster_fails_clearly_and_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let text = common::MINIMAL.replace(
        "provider = \"existing\"",
        &format!(
            "provider = \"existing\"\nkubeconfig = {:?}",
            missing.display().to_string()
        ),
    );
    let pb = playbook_in(dir.path(), &text);
    let engine = kubestrap::steps::build(&pb).unwrap();
    let cluster = Arc::new(kubestrap::steps::Cluster::of_playbook(&pb));
    let env = RunEnv::new(pb).with_finished_resource(cluster);
    let req = ApplyRequest {
        checkpoint: CheckpointMode::Fresh,
        only: Vec::new(),
        concurrency: 4,
    };
    let report = engine::apply(&engine, &env, &req).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.steps.len(),
        1,
        "nothing may start after the first failure"
    );
    let first = &report.steps[0];
    assert_eq!((first.step.as_str(), first.attempts), ("k3s.install", 1));
    let error = first.error.as_deref().unwrap();
    assert!(
        error.contains("no-such-kubeconfig") && error.contains("does not exist"),
        "{error}"
    );
}

/// Write `text` as `dir/kubestrap.toml` and load it.
fn playbook_in(dir: &std::path::Path, text: &str) -> kubestrap::playbook::LoadedPlaybook {
    kubestrap::playbook::Playbook::load(&common::write_playbook(dir, text)).unwrap()
}
