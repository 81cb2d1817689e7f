//! Engine benchmarks (`cargo bench`): a benchmark, not a timed test; figures go in the README.
//!
//! (a) per-step engine overhead, including the durable checkpoint writes, over 1,000 no-op steps;
//! (b) makespan / critical path for a 200-step random DAG whose steps sleep known durations;
//! (c) validate-and-plan time for a 10,000-step DAG.
//!
//! `cargo bench --bench engine -- a c` runs only the parts named.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubestrap::engine::{
    self, Action, ApplyRequest, Built, CheckpointMode, Engine, Phase, RunEnv, RunStatus, Step,
    StepContext, StepError, StepOutcome, Verified,
};
use kubestrap::playbook::Playbook;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Measure with the allocator the binary uses (it wipes freed memory).
#[global_allocator]
static ALLOC: kubestrap::secrets::ZeroizingAllocator = kubestrap::secrets::ZeroizingAllocator;

const PLAYBOOK: &str = include_str!("../tests/fixtures/playbooks/bench-engine.toml");

#[derive(Debug, serde::Serialize)]
struct Sleep {
    id: usize,
    ms: u64,
}

#[async_trait::async_trait]
impl Step for Sleep {
    fn kind(&self) -> &'static str {
        "bench"
    }
    fn payload(&self) -> serde_json::Value {
        serde_json::json!({ "id": self.id, "ms": self.ms })
    }
    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![Action::run(format!("sleep {}ms", self.ms))])
    }
    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        if self.ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
        }
        Ok(StepOutcome::new(false))
    }
    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Ok(Verified::Holds)
    }
}

/// A random DAG: steps spread over the five phases in order, each depending on up to
/// `max_deps` earlier steps (so never on a later phase).
fn random_dag(
    n: usize,
    max_deps: usize,
    ms: impl Fn(&mut StdRng) -> u64,
    seed: u64,
) -> Engine<Built> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut e = Engine::new();
    let names: Vec<String> = (0..n).map(|i| format!("s{i:05}")).collect();
    for i in 0..n {
        let phase = Phase::ALL[i * Phase::ALL.len() / n];
        let k = if i == 0 {
            0
        } else {
            rng.random_range(0..=max_deps.min(i))
        };
        let mut deps: Vec<&str> = (0..k)
            .map(|_| names[rng.random_range(0..i)].as_str())
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let step = Arc::new(Sleep {
            id: i,
            ms: ms(&mut rng),
        });
        e.add(names[i].as_str(), phase, &deps, step);
    }
    e.seal().expect("random DAG is valid")
}

fn env(dir: &std::path::Path) -> RunEnv {
    let path = dir.join("kubestrap.toml");
    std::fs::write(&path, PLAYBOOK).unwrap();
    RunEnv::new(Playbook::load(&path).unwrap())
}

fn per_step_overhead(rt: &tokio::runtime::Runtime) {
    let n = 1000;
    let mut e = Engine::new();
    for i in 0..n {
        e.add(
            format!("noop{i:04}").as_str(),
            Phase::Infrastructure,
            &[],
            Arc::new(Sleep { id: i, ms: 0 }),
        );
    }
    let engine = e.seal().unwrap();
    for concurrency in [1, 4] {
        let elapsed = fresh_apply(rt, &engine, concurrency);
        println!(
            "(a) {n} independent no-op steps, concurrency {concurrency}: {:.2?} total, {:.3} ms/step (journal: a start appended, a completion synced before it counts, concurrent completions sharing a sync)",
            elapsed,
            elapsed.as_secs_f64() * 1000.0 / n as f64
        );
    }
    // The parts of that cost, so the figure can be read on any disk.
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let start = Instant::now();
    let _ = rt.block_on(engine::plan(&engine, &env, 4));
    let walk = start.elapsed();
    println!(
        "(a) scheduler alone (same walk, no checkpoint): {:.1} us/step",
        walk.as_secs_f64() * 1e6 / n as f64
    );
    let mut cp = engine::Checkpoint::new("bench", "sha256:x");
    for node in engine.nodes() {
        cp.steps.insert(
            node.id.clone(),
            engine::StepRecord {
                status: engine::StepStatus::Done,
                phase: node.phase,
                input_hash: node.input_hash.clone(),
                attempts: 1,
                started_at: Some(jiff::Timestamp::now()),
                finished_at: Some(jiff::Timestamp::now()),
                duration_ms: Some(1),
                changed: Some(false),
                outputs: serde_json::Value::Null,
                last_error: None,
            },
        );
    }
    let path = dir.path().join("cp.json");
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        let _ = serde_json::to_vec(&cp).unwrap();
    }
    let serialize = start.elapsed() / rounds;
    let start = Instant::now();
    for _ in 0..rounds {
        cp.save(&path).unwrap();
    }
    let save = start.elapsed() / rounds;
    println!(
        "(a) one checkpoint write with {n} records: serialise {serialize:.2?}, full atomic durable save {save:.2?} (the rest is fsync of file and directory)"
    );
}

/// One fresh apply of `engine` in its own state dir; its wall time. It must succeed.
fn fresh_apply(
    rt: &tokio::runtime::Runtime,
    engine: &Engine<Built>,
    concurrency: usize,
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let req = ApplyRequest {
        checkpoint: CheckpointMode::Fresh,
        only: Vec::new(),
        concurrency,
    };
    let start = Instant::now();
    let report = rt.block_on(engine::apply(engine, &env, &req)).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.status, RunStatus::Succeeded);
    elapsed
}

fn makespan(rt: &tokio::runtime::Runtime) {
    let engine = random_dag(200, 3, |rng| rng.random_range(5..=50), 42);
    let critical =
        engine.critical_path(|n| Duration::from_millis(n.step.payload()["ms"].as_u64().unwrap()));
    for concurrency in [256, 4] {
        let elapsed = fresh_apply(rt, &engine, concurrency);
        println!(
            "(b) 200-step random DAG, concurrency {concurrency}: makespan {:.0?}, critical path {:.0?}, ratio {:.3}",
            elapsed,
            critical,
            elapsed.as_secs_f64() / critical.as_secs_f64()
        );
    }
}

fn validate_and_plan(rt: &tokio::runtime::Runtime) {
    let n = 10_000;
    let mut best = Duration::MAX;
    for seed in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let start = Instant::now();
        let engine = random_dag(n, 4, |_| 0, seed);
        let built = start.elapsed();
        let plan = rt.block_on(engine::plan(&engine, &env, 8));
        let total = start.elapsed();
        assert!(!plan.has_errors());
        println!("(c) {n}-step DAG: build+validate {built:.1?}, validate+plan {total:.1?}");
        best = best.min(total);
    }
    println!("(c) best of 3: {best:.1?}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench --bench engine -- c` runs only part (c); no names: every part.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("a") {
        per_step_overhead(&rt);
    }
    if wanted("b") {
        makespan(&rt);
    }
    if wanted("c") {
        validate_and_plan(&rt);
    }
}
