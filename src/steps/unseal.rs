//! `kubestrap unseal`: unseal Vault (or OpenBao) from the keys Secret, once or as a watch loop,
//! outside the DAG. It reaches Vault exactly as the bootstrap does ([`connect`]: the run's
//! port-forward to the chart's Service, or `[vault] access = "address"`) and reads the shares
//! through the Kubernetes API with the playbook's cluster, so a sealed Vault is one command
//! away wherever `apply` works.
//!
//! The shares are submitted one by one until Vault reports unsealed, so only as many as the
//! threshold still needs leave the Secret. They stay in [`SecretString`]s, are taught to the
//! process-wide redactor the moment they are read, and never appear in an argv, a log line or
//! an error. The submission itself ([`submit_shares`]) is shared with the `vault.unseal` step.
//!
//! The command takes no cluster lease: it may run while an `apply` holds it, whose
//! `verify.vault` may be waiting for exactly this unseal.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::support::Cluster;
use super::vault::VaultEndpoint;
use super::vault_api::{VaultSession, connect, read_shares};
use super::vault_status::{SealStatus, seal_status, wait_active};
use crate::engine::{RunEnv, RunMode, StepContext, StepError, StepId};
use crate::playbook::{LoadedPlaybook, VaultAccess};

/// How long an unsealed Vault may take to become the active node (a raft node: about 0.2 s).
const ACTIVE_WAIT: Duration = Duration::from_secs(10);

/// How often `--watch` asks Vault's seal status: a restarted Vault is seen sealed within this
/// (a status call through the run's tunnel costs about a millisecond).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long `--watch` waits after Vault rejected the Secret's shares before it tries again.
const FAILED_ROUND_PAUSE: Duration = Duration::from_secs(5);

/// What to unseal and where its keys are, from the playbook.
#[derive(Debug, Clone)]
pub struct UnsealTarget {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// The keys Secret (in Vault's namespace).
    pub keys_secret: String,
    /// The playbook file, named in the messages that say what to run next.
    pub playbook: PathBuf,
    /// OpenBao's static seal (`[vault] seal = "static"`): Vault unseals itself from this key
    /// Secret, so nothing is submitted.
    pub static_seal: Option<super::seal_key::StaticSeal>,
}

impl UnsealTarget {
    /// From `[vault]`; `path` is the playbook as the user named it.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook, path: PathBuf) -> Self {
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: pb.playbook.vault.keys_secret.clone(),
            playbook: path,
            static_seal: pb
                .playbook
                .vault
                .seal
                .is_static()
                .then(|| super::seal_key::StaticSeal::new(&pb.playbook.vault.release)),
        }
    }

    /// `Pod vault/vault-0` (port-forward) or the configured address, for messages.
    fn vault(&self) -> String {
        match self.endpoint.access {
            VaultAccess::PortForward => format!(
                "Vault (Pod {}/{} behind Service {}/{})",
                self.endpoint.namespace,
                self.endpoint.pod,
                self.endpoint.namespace,
                self.endpoint.service
            ),
            VaultAccess::Address => format!(
                "Vault at {}",
                self.endpoint.address.as_deref().unwrap_or("?")
            ),
        }
    }

    fn secret(&self) -> String {
        format!("{}/{}", self.endpoint.namespace, self.keys_secret)
    }

    fn playbook(&self) -> String {
        self.playbook.display().to_string()
    }
}

/// What one unseal attempt found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealed {
    /// Vault was unsealed already: nothing submitted, the Secret not read.
    Already {
        /// The server's version, when it says.
        version: Option<String>,
    },
    /// Vault uses the static seal and is unsealed: it unseals itself from its key Secret.
    Itself {
        /// The server's version, when it says.
        version: Option<String>,
        /// `namespace/name` of the key Secret.
        secret: String,
        /// Where the pod mounts the key.
        key_path: String,
    },
    /// Vault was sealed and is unsealed (and active) now.
    Now {
        /// Shares this command submitted.
        used: usize,
        /// Shares Vault was initialised with.
        shares: u64,
        /// Shares needed.
        threshold: u64,
        /// From the status answer that said sealed to unsealed and active.
        took: Duration,
    },
}

impl fmt::Display for Unsealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Already { version } => {
                write!(f, "already unsealed")?;
                if let Some(v) = version {
                    write!(f, " (version {v})")?;
                }
                Ok(())
            }
            Self::Itself {
                version,
                secret,
                key_path,
            } => {
                write!(
                    f,
                    "unsealed: it uses the static seal and unseals itself at every start from Secret {secret} (mounted at {key_path}); nothing to submit"
                )?;
                if let Some(v) = version {
                    write!(f, " (version {v})")?;
                }
                Ok(())
            }
            Self::Now {
                used,
                shares,
                threshold,
                ..
            } => write!(
                f,
                "unsealed with {used} of {shares} shares (threshold {threshold})"
            ),
        }
    }
}

/// Why Vault could not be unsealed; each message says what to do. No variant carries a share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    /// The playbook's sandbox is not running (no kubeconfig yet).
    #[error(
        "the sandbox in {dir} is not running, so there is no Vault to unseal: start it with `kubestrap apply -p {playbook}` (or `kubestrap sandbox up --dir {dir}`)"
    )]
    SandboxDown {
        /// The sandbox directory.
        dir: String,
        /// The playbook.
        playbook: String,
    },
    /// The Kubernetes API does not answer (or the kubeconfig cannot be used).
    #[error(
        "cannot reach the cluster: {0}; check that the cluster is up and that this is the kubeconfig and context you meant (--kubeconfig, --context)"
    )]
    ClusterUnreachable(String),
    /// Vault does not answer (no running pod, a failing port-forward, a wrong address).
    #[error(
        "cannot reach {vault}: {cause}; check that the pod runs (`kubectl -n {namespace} get pod {pod}`) or, with [vault] access = \"address\", that the address is right"
    )]
    VaultUnreachable {
        /// Which Vault.
        vault: String,
        /// Why.
        cause: String,
        /// Vault's namespace.
        namespace: String,
        /// The server pod.
        pod: String,
    },
    /// `sys/init` never ran.
    #[error(
        "{vault} is not initialised, so there is nothing to unseal: run `kubestrap apply -p {playbook}`, which initialises it and writes its keys to Secret {secret}"
    )]
    Uninitialised {
        /// Which Vault.
        vault: String,
        /// The playbook.
        playbook: String,
        /// The keys Secret.
        secret: String,
    },
    /// Vault is initialised and sealed, and the keys Secret does not exist.
    #[error(
        "{vault} is sealed and Secret {secret} with its unseal keys does not exist: if you kept the keys, recreate it (`kubectl -n {namespace} create secret generic {name} --from-file=unseal-key-0=KEY0 ...`, see the README's \"Recovering the Vault keys Secret\") and run `kubestrap unseal -p {playbook}` again; or unseal by hand with the server's CLI (`vault operator unseal`, or `bao operator unseal` for OpenBao)"
    )]
    MissingSecret {
        /// Which Vault.
        vault: String,
        /// `namespace/name`.
        secret: String,
        /// Vault's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The playbook.
        playbook: String,
    },
    /// Vault refused a share, or stayed sealed after every share of the Secret.
    #[error(
        "{vault} is still sealed: {why}; the shares in Secret {secret} are wrong (they belong to another Vault) or too few for the threshold: put the right unseal-key-<n> entries in the Secret (see the README's \"Recovering the Vault keys Secret\") and run `kubestrap unseal -p {playbook}` again"
    )]
    WrongKeys {
        /// Which Vault.
        vault: String,
        /// What Vault said (never a share).
        why: String,
        /// The keys Secret.
        secret: String,
        /// The playbook.
        playbook: String,
    },
    /// Vault uses the static seal and is sealed: its key is missing, not mounted or wrong.
    #[error("{vault} is sealed: {why}")]
    StaticSealed {
        /// Which Vault.
        vault: String,
        /// Where its key should be and what to check (never the key).
        why: String,
    },
    /// Anything else (the Secret cannot be read, an answer that is not Vault's).
    #[error("{0}")]
    Other(String),
}

/// What [`submit_shares`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Vault reported unsealed after `used` shares.
    Unsealed {
        /// Shares submitted.
        used: usize,
        /// Shares in total (`n`).
        shares: u64,
        /// Shares needed (`t`).
        threshold: u64,
    },
    /// Every share was submitted and Vault is still sealed.
    StillSealed {
        /// Progress towards the threshold after the last share.
        progress: u64,
        /// Shares needed.
        threshold: u64,
    },
}

/// Submits `shares` in order through `sys/unseal`, stopping as soon as Vault reports unsealed.
///
/// # Errors
/// The classified [`StepError`] of a refused submission: transient when Vault did not answer,
/// permanent when it rejected a share (wrong key, another Vault's key).
pub(crate) async fn submit_shares(
    session: &VaultSession,
    shares: &[SecretString],
) -> Result<Submitted, StepError> {
    let mut last = (0, 0);
    for (i, share) in shares.iter().enumerate() {
        let r = vaultrs::sys::unseal(
            &session.client,
            Some(share.expose_secret().to_owned()),
            None,
            None,
        )
        .await
        .map_err(|e| StepError::classify("submit an unseal key (PUT /v1/sys/unseal)", e))?;
        if !r.sealed {
            return Ok(Submitted::Unsealed {
                used: i + 1,
                shares: r.n_shares,
                threshold: r.threshold,
            });
        }
        last = (r.progress, r.threshold);
    }
    Ok(Submitted::StillSealed {
        progress: last.0,
        threshold: last.1,
    })
}

/// A step context for the command: no lease ([`RunMode::Plan`] never takes one), the
/// environment's interrupt as its cancellation.
#[must_use]
pub fn context(env: RunEnv) -> StepContext {
    let cancel = env.interrupt.clone();
    StepContext::new(
        env,
        StepId::new("unseal"),
        RunMode::Plan,
        BTreeMap::new(),
        cancel,
    )
}

/// How long [`open`] waits for the API server when the tunnel could not be opened.
const PROBE: Duration = Duration::from_secs(3);

/// Opens the session to Vault (the run's tunnel, opened on first use). When the tunnel cannot
/// be opened because the API server does not answer, says that (naming the server, context
/// and kubeconfig) rather than how the Service read failed.
async fn open(ctx: &StepContext, target: &UnsealTarget) -> Result<VaultSession, UnsealError> {
    match connect(ctx, &target.endpoint, None).await {
        Ok(session) => Ok(session),
        Err(e) => {
            if let Some(cluster) = ctx.resource::<Cluster>()
                && let Err(why) = cluster.probe(PROBE).await
            {
                return Err(UnsealError::ClusterUnreachable(why));
            }
            Err(vault_error(target, &e))
        }
    }
}

fn vault_error(target: &UnsealTarget, e: &StepError) -> UnsealError {
    if e.is_transient() {
        UnsealError::VaultUnreachable {
            vault: target.vault(),
            cause: e.chain(),
            namespace: target.endpoint.namespace.clone(),
            pod: target.endpoint.pod.clone(),
        }
    } else {
        UnsealError::Other(e.chain())
    }
}

/// Reads the seal status, then (only when sealed) the shares, and submits them.
async fn unseal_over(
    ctx: &StepContext,
    session: &VaultSession,
    target: &UnsealTarget,
) -> Result<Unsealed, UnsealError> {
    let status: SealStatus = seal_status(session)
        .await
        .map_err(|e| vault_error(target, &e))?;
    if !status.initialized {
        return Err(UnsealError::Uninitialised {
            vault: target.vault(),
            playbook: target.playbook(),
            secret: target.secret(),
        });
    }
    if let Some(seal) = &target.static_seal {
        let ns = &target.endpoint.namespace;
        return if status.sealed {
            Err(UnsealError::StaticSealed {
                vault: target.vault(),
                why: super::vault::static_seal_sealed(ns, &target.endpoint.pod, seal),
            })
        } else {
            Ok(Unsealed::Itself {
                version: status.version,
                secret: format!("{ns}/{}", seal.secret),
                key_path: seal.key_path(),
            })
        };
    }
    if !status.sealed {
        return Ok(Unsealed::Already {
            version: status.version,
        });
    }
    let seen_sealed = tokio::time::Instant::now();
    let ns = &target.endpoint.namespace;
    let shares = read_shares(ctx, ns, &target.keys_secret)
        .await
        .map_err(|e| UnsealError::Other(e.chain()))?
        .ok_or_else(|| UnsealError::MissingSecret {
            vault: target.vault(),
            secret: target.secret(),
            namespace: ns.clone(),
            name: target.keys_secret.clone(),
            playbook: target.playbook(),
        })?;
    let wrong = |why: String| UnsealError::WrongKeys {
        vault: target.vault(),
        why,
        secret: target.secret(),
        playbook: target.playbook(),
    };
    match submit_shares(session, &shares).await {
        Ok(Submitted::Unsealed {
            used,
            shares,
            threshold,
        }) => {
            wait_active(session, ACTIVE_WAIT)
                .await
                .map_err(|e| vault_error(target, &e))?;
            Ok(Unsealed::Now {
                used,
                shares,
                threshold,
                took: seen_sealed.elapsed(),
            })
        }
        Ok(Submitted::StillSealed {
            progress,
            threshold,
        }) => Err(wrong(format!(
            "progress {progress}/{threshold} after all {} shares of the Secret",
            shares.len()
        ))),
        Err(e) if e.is_transient() => Err(vault_error(target, &e)),
        Err(e) => Err(wrong(format!("Vault rejected a share ({})", e.chain()))),
    }
}

/// Unseals Vault once: already unsealed, unsealed now, or why not.
///
/// # Errors
/// [`UnsealError`] saying what to do.
pub async fn unseal_once(
    ctx: &StepContext,
    target: &UnsealTarget,
) -> Result<Unsealed, UnsealError> {
    let session = open(ctx, target).await?;
    unseal_over(ctx, &session, target).await
}

/// One line of `--watch`: something changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Vault is unsealed (the first observation, or again after a problem) and nothing was
    /// submitted.
    Unsealed {
        /// The server's version, when it says.
        version: Option<String>,
    },
    /// Vault was seen sealed and is unsealed now ([`Unsealed::Now`]).
    Resealed(Unsealed),
    /// Something is wrong (reported once until it changes).
    Problem(UnsealError),
}

/// Watches Vault and unseals it whenever it is sealed, until `ctx` is cancelled (SIGINT or
/// SIGTERM). Reports each change once through `on_event`; a problem does not end the loop
/// (the cluster may come back, the Secret may be restored). Polls every [`WATCH_INTERVAL`]
/// through one session, so the run's tunnel follows a restarted pod; after rejected shares,
/// every [`FAILED_ROUND_PAUSE`].
pub async fn watch(ctx: &StepContext, target: &UnsealTarget, mut on_event: impl FnMut(WatchEvent)) {
    let cancel = ctx.cancellation().clone();
    let mut session: Option<VaultSession> = None;
    let mut last: Option<WatchEvent> = None;
    loop {
        let attempt = async {
            let s = match &mut session {
                Some(s) => s,
                None => session.insert(open(ctx, target).await?),
            };
            unseal_over(ctx, s, target).await
        };
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = attempt => r,
        };
        let event = match result {
            Ok(Unsealed::Already { version } | Unsealed::Itself { version, .. }) => {
                WatchEvent::Unsealed { version }
            }
            Ok(now @ Unsealed::Now { .. }) => WatchEvent::Resealed(now),
            Err(e) => WatchEvent::Problem(e),
        };
        let changed = match (&last, &event) {
            (None, _) | (_, WatchEvent::Resealed(_)) => true,
            (Some(WatchEvent::Problem(a)), WatchEvent::Problem(b)) => {
                std::mem::discriminant(a) != std::mem::discriminant(b)
            }
            (Some(WatchEvent::Problem(_)), _) | (Some(_), WatchEvent::Problem(_)) => true,
            (Some(_), WatchEvent::Unsealed { .. }) => false,
        };
        if changed {
            on_event(event.clone());
        }
        // Shares Vault rejected are not submitted again every poll (each round is a failed
        // unseal in Vault's audit log); the in-cluster unsealer pauses as long.
        let pause = if matches!(event, WatchEvent::Problem(UnsealError::WrongKeys { .. })) {
            FAILED_ROUND_PAUSE
        } else {
            WATCH_INTERVAL
        };
        last = Some(event);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> UnsealTarget {
        UnsealTarget {
            endpoint: VaultEndpoint::default_port_forward(),
            keys_secret: "vault-init-keys".into(),
            playbook: PathBuf::from("kubestrap.toml"),
            static_seal: None,
        }
    }

    #[test]
    fn every_failure_says_what_to_run_next() {
        let t = target();
        let uninit = UnsealError::Uninitialised {
            vault: t.vault(),
            playbook: t.playbook(),
            secret: t.secret(),
        }
        .to_string();
        assert!(
            uninit.contains("kubestrap apply -p kubestrap.toml"),
            "{uninit}"
        );
        assert!(uninit.contains("Pod vault/vault-0"), "{uninit}");
        let missing = UnsealError::MissingSecret {
            vault: t.vault(),
            secret: t.secret(),
            namespace: "vault".into(),
            name: "vault-init-keys".into(),
            playbook: t.playbook(),
        }
        .to_string();
        assert!(
            missing.contains("Secret vault/vault-init-keys"),
            "{missing}"
        );
        assert!(missing.contains("kubectl -n vault create secret generic vault-init-keys"));
        assert!(
            missing.contains("kubestrap unseal -p kubestrap.toml"),
            "{missing}"
        );
    }

    #[test]
    fn results_read_as_one_line() {
        let now = Unsealed::Now {
            used: 3,
            shares: 5,
            threshold: 3,
            took: Duration::from_millis(7),
        };
        assert_eq!(now.to_string(), "unsealed with 3 of 5 shares (threshold 3)");
        let already = Unsealed::Already {
            version: Some("2.7.2".into()),
        };
        assert_eq!(already.to_string(), "already unsealed (version 2.7.2)");
    }
}
