//! Sandbox API throughput and latency with 16 concurrent kube-rs clients, watch delivery
//! latency, and resident memory while holding 5,000 objects.
//!
//! `cargo bench -p kubestrap-sandbox --bench sandbox` (release build).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kubestrap_sandbox::SandboxConfig;
use kubestrap_test_support::start_sandbox;
use serde_json::json;

const CLIENTS: usize = 16;
const OBJECTS: usize = 5000;

fn report(what: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{what:<28} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests)",
        lat.len() as f64 / wall.as_secs_f64(),
        p(0.50).as_secs_f64() * 1000.0,
        p(0.99).as_secs_f64() * 1000.0,
        lat.len()
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn run<F, Fut>(what: &str, total: usize, f: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (c..total).step_by(CLIENTS) {
                let t = Instant::now();
                f(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    report(what, all, start.elapsed());
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rss_before = rss_kib();
    let (h, client) = start_sandbox(SandboxConfig::new(dir.path())).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let a = api.clone();
    run("create", OBJECTS, move |i| {
        let a = a.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}"), "labels": {"shard": (i % 10).to_string()}}, "data": {"k": "v".repeat(200)}})).expect("cm");
            a.create(&PostParams::default(), &cm).await.expect("create");
        }
    })
    .await;
    println!(
        "RSS holding {OBJECTS} objects: {} MiB (process, before start {} MiB)",
        rss_kib() / 1024,
        rss_before / 1024
    );

    let a = api.clone();
    run("get", 20_000, move |i| {
        let a = a.clone();
        async move {
            a.get(&format!("cm-{}", i % OBJECTS)).await.expect("get");
        }
    })
    .await;
    let a = api.clone();
    run("list (label, ~500 items)", 400, move |i| {
        let a = a.clone();
        async move {
            a.list(&ListParams::default().labels(&format!("shard={}", i % 10)))
                .await
                .expect("list");
        }
    })
    .await;
    let a = api.clone();
    run("server-side apply", 5000, move |i| {
        let a = a.clone();
        async move {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{}", i % OBJECTS)}, "data": {"applied": i.to_string()}});
            a.patch(&format!("cm-{}", i % OBJECTS), &PatchParams::apply("bench").force(), &Patch::Apply(&body)).await.expect("apply");
        }
    })
    .await;

    // Watch delivery latency: time from a write's response to the event's arrival.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().fields("metadata.name=cm-0"), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..200 {
        let t = Instant::now();
        api.patch(
            "cm-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"w": i.to_string()}})),
        )
        .await
        .expect("patch");
        loop {
            match stream.try_next().await.expect("watch").expect("open") {
                WatchEvent::Modified(_) => break,
                _ => continue,
            }
        }
        lat.push(t.elapsed());
    }
    report("write -> watch event", lat, start.elapsed());
    h.shutdown().await.expect("shutdown");
}
