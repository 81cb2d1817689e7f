//! Fault injection: API error rate and latency, per-component readiness delays, and
//! component-specific knobs for the later controllers. Deterministic for a given seed.
//!
//! Spec syntax: `seed=7,api_error_rate=0.1,api_error=503|500|429,latency_ms=50,delay.node=2s,delay_scale=0.5,restart.vault=30s`.
//!
//! Terminal faults, for proving that failures explain themselves:
//! `stuck.<workload>=ImagePullBackOff|CrashLoopBackOff|Unschedulable` keeps that workload's pods
//! un-ready the way the kubelet or the scheduler would, and `helm.fail.<release>=<message>` makes
//! helm-controller fail that HelmRelease's install with the message and stall it.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A malformed fault spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultSpecError {
    /// A `key=value` pair could not be parsed.
    #[error("bad fault setting {0:?}: expected key=value; see `kubestrap sandbox up --help`")]
    Syntax(String),
    /// An unknown key.
    #[error(
        "unknown fault setting {0:?}; known: seed, api_error_rate, api_error, latency_ms, delay.<component> (node, vault, eso, flux, a workload), delay_scale, restart.<component>, stuck.<workload>, vault_restart, eso_store_flap, vault.*, eso.*, flux.*, helm.* (helm.fail.<release>)"
    )]
    UnknownKey(String),
    /// A value of the wrong type.
    #[error("bad value for fault setting {key:?}: {value:?} ({why})")]
    Value {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        why: &'static str,
    },
}

/// Parsed fault settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpec {
    /// RNG seed (decisions are a deterministic sequence for a seed).
    pub seed: u64,
    /// Probability that an API request fails.
    pub api_error_rate: f64,
    /// Codes to fail with, chosen uniformly.
    pub api_errors: Vec<u16>,
    /// Added latency per API request.
    pub latency_ms: u64,
    /// Readiness delay per component (`node`, `vault`, a workload name, ...).
    pub delays: BTreeMap<String, Duration>,
    /// Restart (delete) a component's pods at this interval (`restart.vault=30s`).
    pub restarts: BTreeMap<String, Duration>,
    /// Multiplies every delay.
    pub delay_scale: f64,
    /// Component knobs for other controllers (`vault.restart_every=30s`, ...).
    pub extra: BTreeMap<String, String>,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            seed: 0,
            api_error_rate: 0.0,
            api_errors: vec![503],
            latency_ms: 0,
            delays: BTreeMap::new(),
            restarts: BTreeMap::new(),
            delay_scale: 1.0,
            extra: BTreeMap::new(),
        }
    }
}

/// Parses `15s`, `500ms`, `2m` or a number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0 && v.is_finite()).then(|| Duration::from_secs_f64(v * mul))
}

impl FaultSpec {
    /// Parses a spec; the empty string means no faults.
    ///
    /// # Errors
    /// Syntax errors, unknown keys, bad values.
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let mut out = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FaultSpecError::Syntax(part.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            let bad = |why| FaultSpecError::Value {
                key: k.to_string(),
                value: v.to_string(),
                why,
            };
            match k {
                "seed" => out.seed = v.parse().map_err(|_| bad("an integer"))?,
                "api_error_rate" => {
                    let r: f64 = v.parse().map_err(|_| bad("a number between 0 and 1"))?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err(bad("a number between 0 and 1"));
                    }
                    out.api_error_rate = r;
                }
                "api_error" => {
                    out.api_errors = v
                        .split('|')
                        .map(|c| match c.trim().parse::<u16>() {
                            Ok(c @ (429 | 500 | 502 | 503 | 504)) => Ok(c),
                            _ => Err(bad("codes among 429|500|502|503|504")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "latency_ms" => out.latency_ms = v.parse().map_err(|_| bad("milliseconds"))?,
                "delay_scale" => {
                    let s: f64 = v.parse().map_err(|_| bad("a non-negative number"))?;
                    if s < 0.0 || !s.is_finite() {
                        return Err(bad("a non-negative number"));
                    }
                    out.delay_scale = s;
                }
                // One Vault restart this long after start (also `vault.restart_at`).
                "vault_restart" => {
                    parse_duration(v).ok_or_else(|| bad("a duration like 15s or 500ms"))?;
                    out.extra.insert("vault.restart_at".into(), v.to_string());
                }
                // ClusterSecretStores alternate valid/invalid windows of this length.
                "eso_store_flap" => {
                    parse_duration(v).ok_or_else(|| bad("a duration like 15s or 500ms"))?;
                    out.extra.insert("eso.store_flap".into(), v.to_string());
                }
                _ => {
                    if let Some(w) = k.strip_prefix("stuck.") {
                        Stuck::parse(v).ok_or_else(|| {
                            bad("ImagePullBackOff, CrashLoopBackOff or Unschedulable")
                        })?;
                        if w.is_empty() {
                            return Err(bad("a workload name after `stuck.`"));
                        }
                        out.extra.insert(k.to_string(), v.to_string());
                    } else if let Some(r) = k.strip_prefix("helm.fail.") {
                        if r.is_empty() || v.is_empty() {
                            return Err(bad("helm.fail.<release>=<message>, both non-empty"));
                        }
                        out.extra.insert(k.to_string(), v.to_string());
                    } else if let Some(c) = k.strip_prefix("restart.") {
                        let d = parse_duration(v)
                            .filter(|d| !d.is_zero())
                            .ok_or_else(|| bad("a non-zero duration like 30s"))?;
                        out.restarts.insert(c.to_string(), d);
                    } else if let Some(c) = k.strip_prefix("delay.") {
                        let d =
                            parse_duration(v).ok_or_else(|| bad("a duration like 15s or 500ms"))?;
                        out.delays.insert(c.to_string(), d);
                    } else if ["vault.", "eso.", "flux.", "helm."]
                        .iter()
                        .any(|p| k.starts_with(p))
                    {
                        out.extra.insert(k.to_string(), v.to_string());
                    } else {
                        return Err(FaultSpecError::UnknownKey(k.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// How a `stuck.<workload>` fault keeps the workload's pods from becoming ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// The image cannot be pulled: the kubelet backs off pulling it (pod Pending).
    ImagePullBackOff,
    /// The container exits at once: the kubelet backs off restarting it (pod Running).
    CrashLoopBackOff,
    /// No node fits: the scheduler leaves the pod Pending with `PodScheduled=False`.
    Unschedulable,
}

impl Stuck {
    /// The fault value as written in a spec.
    #[must_use]
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "ImagePullBackOff" => Some(Self::ImagePullBackOff),
            "CrashLoopBackOff" => Some(Self::CrashLoopBackOff),
            "Unschedulable" => Some(Self::Unschedulable),
            _ => None,
        }
    }
}

/// Live fault state shared by the server and controllers.
#[derive(Debug)]
pub struct Faults {
    spec: RwLock<FaultSpec>,
    rng: Mutex<StdRng>,
}

/// What to do to one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Sleep this long first.
    pub latency: Duration,
    /// Then fail with this code.
    pub error: Option<u16>,
}

impl Faults {
    /// Fault state from a spec.
    pub fn new(spec: FaultSpec) -> Self {
        let rng = StdRng::seed_from_u64(spec.seed);
        Self {
            spec: RwLock::new(spec),
            rng: Mutex::new(rng),
        }
    }

    /// Replaces the spec (and re-seeds).
    pub fn set(&self, spec: FaultSpec) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(spec.seed);
        *self.spec.write().unwrap_or_else(|p| p.into_inner()) = spec;
    }

    /// The current spec.
    pub fn spec(&self) -> FaultSpec {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decides the fate of one API request (the next draw of the seeded sequence).
    pub fn decide(&self) -> Decision {
        let spec = self.spec.read().unwrap_or_else(|p| p.into_inner());
        let latency = Duration::from_millis(spec.latency_ms);
        if spec.api_error_rate <= 0.0 || spec.api_errors.is_empty() {
            return Decision {
                latency,
                error: None,
            };
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let fail = rng.random_bool(spec.api_error_rate);
        let pick = rng.random_range(0..spec.api_errors.len());
        Decision {
            latency,
            error: fail.then(|| spec.api_errors[pick]),
        }
    }

    /// Readiness delay of a component, scaled.
    pub fn delay(&self, component: &str) -> Duration {
        let spec = self.spec.read().unwrap_or_else(|p| p.into_inner());
        spec.delays
            .get(component)
            .map(|d| d.mul_f64(spec.delay_scale))
            .unwrap_or_default()
    }

    /// Pod-restart intervals per component.
    pub fn restarts(&self) -> BTreeMap<String, Duration> {
        self.spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .restarts
            .clone()
    }

    /// How the pods of `workload` are kept from becoming ready (`stuck.<workload>`).
    pub fn stuck(&self, workload: &str) -> Option<Stuck> {
        self.extra(&format!("stuck.{workload}"))
            .and_then(|v| Stuck::parse(&v))
    }

    /// The message a HelmRelease's install fails with (`helm.fail.<release>`), by the
    /// HelmRelease's name or its Helm release name.
    pub fn helm_failure(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find_map(|n| self.extra(&format!("helm.fail.{n}")))
    }

    /// A component knob (`vault.restart_every`), for controllers added later.
    pub fn extra(&self, key: &str) -> Option<String> {
        self.spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .extra
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let s = FaultSpec::parse("seed=7,api_error_rate=0.1,api_error=503|500|429,latency_ms=50,delay.node=2s,delay_scale=0.5,vault.restart=1,restart.vault=30s")
            .expect("parse");
        assert_eq!(s.seed, 7);
        assert_eq!(s.api_errors, vec![503, 500, 429]);
        assert_eq!(s.delays["node"], Duration::from_secs(2));
        assert_eq!(s.restarts["vault"], Duration::from_secs(30));
        assert!(FaultSpec::parse("restart.vault=0s").is_err());
        assert_eq!(Faults::new(s).delay("node"), Duration::from_secs(1));
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        assert!(matches!(
            FaultSpec::parse("bogus=1"),
            Err(FaultSpecError::UnknownKey(_))
        ));
        assert!(FaultSpec::parse("api_error_rate=2").is_err());
        assert!(FaultSpec::parse("api_error=404").is_err());
        assert!(FaultSpec::parse("seed").is_err());
    }

    #[test]
    fn component_faults_land_in_their_knobs() {
        let s =
            FaultSpec::parse("vault_restart=30s,eso_store_flap=500ms,delay.eso=2s").expect("parse");
        assert_eq!(s.extra["vault.restart_at"], "30s");
        assert_eq!(s.extra["eso.store_flap"], "500ms");
        assert_eq!(s.delays["eso"], Duration::from_secs(2));
        assert!(FaultSpec::parse("vault_restart=soon").is_err());
    }

    #[test]
    fn stuck_and_helm_failure_faults_are_checked_and_found() {
        let f = Faults::new(
            FaultSpec::parse("stuck.vault=ImagePullBackOff,helm.fail.vault=chart says no")
                .expect("parse"),
        );
        assert_eq!(f.stuck("vault"), Some(Stuck::ImagePullBackOff));
        assert_eq!(f.stuck("external-secrets"), None);
        assert_eq!(
            f.helm_failure(&["x", "vault"]).as_deref(),
            Some("chart says no")
        );
        assert!(FaultSpec::parse("stuck.vault=Sleepy").is_err());
        assert!(FaultSpec::parse("stuck.=Unschedulable").is_err());
        assert!(FaultSpec::parse("helm.fail.vault=").is_err());
    }

    #[test]
    fn same_seed_same_sequence() {
        let spec = FaultSpec::parse("seed=42,api_error_rate=0.5,api_error=500|503").expect("parse");
        let a = Faults::new(spec.clone());
        let b = Faults::new(spec);
        let sa: Vec<_> = (0..50).map(|_| a.decide().error).collect();
        let sb: Vec<_> = (0..50).map(|_| b.decide().error).collect();
        assert_eq!(sa, sb);
        assert!(sa.iter().any(Option::is_some) && sa.iter().any(Option::is_none));
    }
}
