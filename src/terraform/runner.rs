//! Running `terraform` (or `tofu`) `init` and `apply` non-interactively.
//!
//! The child environment is cleared, then gets only: `PATH`, `HOME`, `TF_IN_AUTOMATION=1`,
//! `TF_INPUT=0`, `CHECKPOINT_DISABLE=1` (no version check calls home from a bootstrap), and
//! the caller's explicit extra variables (the step passes `VAULT_ADDR` and `VAULT_TOKEN`).
//! Secret variables go only to `apply` and `plan`: `init` downloads providers and never needs
//! them, so it gets the plain ones alone.
//! Variables travel through an inherited pipe as `-var-file=/dev/fd/N` ([`super::pipe`]).
//! Output is streamed line by line to a caller-supplied sink, with every known secret value
//! replaced by `[redacted]` first; on failure the error carries Terraform's own error text.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::pipe::SecretPipe;
use super::varfile::{VarFileError, Variables};

/// How many trailing stderr lines are kept for the error when Terraform prints no `Error:`.
const TAIL_LINES: usize = 20;
/// At most this many lines of Terraform's error text are put into [`TerraformError::Failed`].
const MAX_ERROR_LINES: usize = 60;

/// Why a Terraform run failed.
#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    /// The binary is not on PATH.
    #[error(
        "{binary:?} was not found on PATH: install it, or set [terraform] binary to terraform or tofu"
    )]
    NotFound {
        /// The binary name asked for.
        binary: String,
    },
    /// The module directory does not exist.
    #[error(
        "terraform module directory {dir} does not exist: check [terraform] dir in the playbook"
    )]
    NoModule {
        /// The directory.
        dir: PathBuf,
    },
    /// The child could not be started.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The resolved binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The variables could not be rendered.
    #[error(transparent)]
    VarFile(#[from] VarFileError),
    /// The pipe could not be created or written.
    #[error("could not pass the variables to terraform through a pipe: {0}")]
    Pipe(#[source] std::io::Error),
    /// Reading the child's output or waiting for it failed.
    #[error("lost contact with the terraform process: {0}")]
    Io(#[source] std::io::Error),
    /// Terraform exited unsuccessfully; `error` is its own error text (secrets redacted).
    #[error("terraform {command} failed ({status}):\n{error}")]
    Failed {
        /// `init`, `plan` or `apply`.
        command: &'static str,
        /// The exit status, e.g. `exit status 1`.
        status: String,
        /// Terraform's error text.
        error: String,
    },
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives Terraform's output, one line at a time, already redacted.
pub type Sink<'a> = &'a mut (dyn FnMut(OutputStream, &str) + Send);

/// A configured Terraform invocation for one module directory.
#[derive(Debug)]
pub struct Terraform {
    binary: PathBuf,
    module_dir: PathBuf,
    path_env: OsString,
    home: Option<PathBuf>,
    /// Non-secret variables, passed to every command.
    env: Vec<(String, String)>,
    /// Secret variables, passed only to the commands that talk to providers (`apply`, `plan`).
    secret_env: Vec<(String, SecretString)>,
}

impl Terraform {
    /// Resolves `binary` (`terraform`, `tofu`, or a path) on the process PATH for `module_dir`.
    ///
    /// # Errors
    /// [`TerraformError::NotFound`] or [`TerraformError::NoModule`].
    pub fn new(binary: &str, module_dir: &Path) -> Result<Self, TerraformError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::with_path(binary, module_dir, path)
    }

    /// Like [`Terraform::new`] with an explicit PATH, used both to find the binary and as the
    /// child's PATH (so tests and wrappers can put their own binaries first).
    ///
    /// # Errors
    /// [`TerraformError::NotFound`] or [`TerraformError::NoModule`].
    pub fn with_path(
        binary: &str,
        module_dir: &Path,
        path: OsString,
    ) -> Result<Self, TerraformError> {
        if !module_dir.is_dir() {
            return Err(TerraformError::NoModule {
                dir: module_dir.to_owned(),
            });
        }
        let resolved = find_on_path(binary, &path).ok_or_else(|| TerraformError::NotFound {
            binary: binary.to_owned(),
        })?;
        Ok(Self {
            binary: resolved,
            module_dir: module_dir.to_owned(),
            path_env: path,
            home: std::env::var_os("HOME").map(PathBuf::from),
            env: Vec::new(),
            secret_env: Vec::new(),
        })
    }

    /// The resolved binary.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Sets the child's HOME (e.g. a private directory under the state dir, so no user
    /// `.terraformrc` changes behaviour). Defaults to the caller's HOME.
    #[must_use]
    pub fn home(mut self, home: &Path) -> Self {
        self.home = Some(home.to_owned());
        self
    }

    /// Adds a non-secret environment variable for the child (e.g. `VAULT_ADDR`, `TF_DATA_DIR`).
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a secret environment variable for the child (e.g. `VAULT_TOKEN`, which the vault
    /// provider and provisioners read from the environment). Its value is also redacted from
    /// the output. Only `apply` and `plan` receive it; `init` does not need it.
    #[must_use]
    pub fn secret_env(mut self, key: &str, value: SecretString) -> Self {
        self.secret_env.push((key.to_owned(), value));
        self
    }

    /// `terraform init -input=false -no-color`, with the plain environment only (no secret env).
    ///
    /// # Errors
    /// [`TerraformError::Failed`] with Terraform's error text, or a process error.
    pub async fn init(&self, sink: Sink<'_>) -> Result<(), TerraformError> {
        self.run(
            "init",
            &["init", "-input=false", "-no-color"],
            None,
            false,
            &[0],
            sink,
        )
        .await
        .map(|_| ())
    }

    /// `terraform apply -auto-approve -input=false -no-color -var-file=/dev/fd/N` with `vars`
    /// written into the pipe N.
    ///
    /// # Errors
    /// [`TerraformError::Failed`] with Terraform's error text, or a process error.
    pub async fn apply(&self, vars: &Variables, sink: Sink<'_>) -> Result<(), TerraformError> {
        self.run(
            "apply",
            &["apply", "-auto-approve", "-input=false", "-no-color"],
            Some(vars),
            true,
            &[0],
            sink,
        )
        .await
        .map(|_| ())
    }

    /// `terraform plan -detailed-exitcode -input=false -no-color -var-file=/dev/fd/N`: whether
    /// an apply with `vars` would change anything (`true`), for kubestrap's own `plan`.
    ///
    /// # Errors
    /// [`TerraformError::Failed`] with Terraform's error text, or a process error.
    pub async fn plan(&self, vars: &Variables, sink: Sink<'_>) -> Result<bool, TerraformError> {
        // -detailed-exitcode: 0 = no changes, 2 = changes present, 1 = error.
        let code = self
            .run(
                "plan",
                &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
                Some(vars),
                true,
                &[0, 2],
                sink,
            )
            .await?;
        Ok(code == 2)
    }

    /// Runs one command; `secrets` says whether the secret env is passed; `ok` lists the exit
    /// codes that mean success. Returns the exit code.
    async fn run(
        &self,
        command: &'static str,
        args: &[&str],
        vars: Option<&Variables>,
        secrets: bool,
        ok: &[i32],
        sink: Sink<'_>,
    ) -> Result<i32, TerraformError> {
        // Every known value is redacted, even where the secret env is not passed.
        let mut redact: Vec<&str> = self
            .env
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(self.secret_env.iter().map(|(_, v)| v.expose_secret()))
            .collect();
        if let Some(vars) = vars {
            redact.extend(
                vars.secret_values()
                    .into_iter()
                    .map(ExposeSecret::expose_secret),
            );
        }
        // Non-secret values such as VAULT_ADDR are in the list too; redacting them is harmless
        // but noisy, so only values with some length are redacted.
        redact.retain(|s| s.len() >= 4);
        // Longest first, so a secret containing another is replaced whole.
        redact.sort_by_key(|s| std::cmp::Reverse(s.len()));

        let var_file = vars.map(Variables::render).transpose()?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .current_dir(&self.module_dir)
            .env_clear()
            .env("PATH", &self.path_env)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if secrets {
            for (k, v) in &self.secret_env {
                cmd.env(k, v.expose_secret());
            }
        }
        let pipe = match &var_file {
            Some(_) => {
                let pipe = SecretPipe::new().map_err(TerraformError::Pipe)?;
                cmd.arg(format!("-var-file=/dev/fd/{}", pipe.child_fd()));
                pipe.share_with(&mut cmd);
                Some(pipe)
            }
            None => None,
        };
        let mut child = cmd.spawn().map_err(|source| TerraformError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        // The command holds copies of the secret env values; drop it now.
        drop(cmd);
        let feeding = async {
            match (pipe, var_file) {
                (Some(pipe), Some(data)) => pipe.feed(data).await,
                _ => Ok(()),
            }
        };
        let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
        let reading = stream_output(stdout, stderr, &redact, sink);
        let (fed, read) = tokio::join!(feeding, reading);
        let status = child.wait().await.map_err(TerraformError::Io)?;
        let stderr_lines = read?;
        let code = status.code();
        if !code.is_some_and(|c| ok.contains(&c)) {
            return Err(TerraformError::Failed {
                command,
                status: status.to_string(),
                error: error_text(&stderr_lines),
            });
        }
        // Terraform succeeded, so it read the variables; a write error would be surprising,
        // but it means the variables may not have arrived.
        fed.map_err(TerraformError::Pipe)?;
        Ok(code.unwrap_or_default())
    }
}

type Lines<R> = tokio::io::Lines<BufReader<R>>;

/// Forwards both streams to the sink as lines arrive; returns the last stderr lines.
async fn stream_output(
    mut stdout: Option<Lines<tokio::process::ChildStdout>>,
    mut stderr: Option<Lines<tokio::process::ChildStderr>>,
    redact: &[&str],
    sink: Sink<'_>,
) -> Result<VecDeque<String>, TerraformError> {
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut in_error = false;
    loop {
        let (stream, line) = tokio::select! {
            line = next_line(&mut stdout), if stdout.is_some() => (OutputStream::Stdout, line),
            line = next_line(&mut stderr), if stderr.is_some() => (OutputStream::Stderr, line),
            else => break,
        };
        let line = match line.map_err(TerraformError::Io)? {
            Some(l) => redacted(&l, redact),
            None => {
                match stream {
                    OutputStream::Stdout => stdout = None,
                    OutputStream::Stderr => stderr = None,
                }
                continue;
            }
        };
        sink(stream, &line);
        if stream == OutputStream::Stderr {
            // Keep everything from the first `Error:` on (bounded), else a rolling tail.
            in_error |= line.starts_with("Error: ");
            if !in_error && kept.len() == TAIL_LINES {
                kept.pop_front();
            }
            if kept.len() < MAX_ERROR_LINES {
                kept.push_back(line);
            }
        }
    }
    Ok(kept)
}

async fn next_line<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut Option<Lines<R>>,
) -> std::io::Result<Option<String>> {
    match lines {
        Some(l) => l.next_line().await,
        None => Ok(None),
    }
}

fn redacted(line: &str, secrets: &[&str]) -> String {
    let mut out = line.to_owned();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

/// Terraform's error text: from the first `Error:` line on, else the stderr tail.
fn error_text(lines: &VecDeque<String>) -> String {
    let start = lines
        .iter()
        .position(|l| l.starts_with("Error: "))
        .unwrap_or(0);
    let text: Vec<&str> = lines.iter().skip(start).map(String::as_str).collect();
    let text = text.join("\n");
    let text = text.trim();
    if text.is_empty() {
        "terraform printed no error message; see its output above".to_owned()
    } else {
        text.to_owned()
    }
}

/// Finds `binary` like a shell: a name containing `/` is used as is, else the first executable
/// file of that name in `path`.
#[must_use]
pub fn find_on_path(binary: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(binary))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binaries_like_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tofu");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_on_path("tofu", &path), None, "not executable yet");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("tofu", &path), Some(bin.clone()));
        assert_eq!(
            find_on_path(bin.to_str().unwrap(), &OsString::new()),
            Some(bin)
        );
        assert_eq!(find_on_path("terraform", &path), None);
    }

    #[test]
    fn error_text_starts_at_terraforms_error() {
        let lines: VecDeque<String> = [
            "noise",
            "",
            "Error: Invalid value",
            "",
            "  on main.tf line 3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            error_text(&lines),
            "Error: Invalid value\n\n  on main.tf line 3"
        );
        let tail: VecDeque<String> = ["panic: boom"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(error_text(&tail), "panic: boom");
    }

    #[test]
    fn redacts_longest_secrets_first() {
        assert_eq!(
            redacted("token=abcd-efgh and abcd", &["abcd-efgh", "abcd"]),
            "token=[redacted] and [redacted]"
        );
    }

    #[tokio::test]
    async fn a_failing_command_returns_its_error_text_and_streams_redacted_lines() {
        // A stand-in "terraform" that prints a secret and an error, then fails.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("terraform");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho \"using $VAULT_TOKEN\"\necho 'Error: Unsupported argument' >&2\necho '  on main.tf line 1' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path =
            std::env::join_paths([dir.path(), Path::new("/usr/bin"), Path::new("/bin")]).unwrap();
        let tf = Terraform::with_path("terraform", dir.path(), path)
            .unwrap()
            .secret_env("VAULT_TOKEN", SecretString::from("hvs.canary-token"));
        let mut seen = Vec::new();
        // `apply`, since only the commands that need it receive the secret env.
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tf.apply(&Variables::new(), &mut |s, l| seen.push((s, l.to_owned()))),
        )
        .await
        .expect("finished")
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "terraform apply failed (exit status: 1):\nError: Unsupported argument\n  on main.tf line 1"
        );
        assert!(
            seen.contains(&(OutputStream::Stdout, "using [redacted]".to_owned())),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn init_gets_the_plain_env_but_not_the_secret_env() {
        // A stand-in "terraform" that prints its whole environment.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("terraform");
        std::fs::write(&bin, "#!/bin/sh\nenv\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path =
            std::env::join_paths([dir.path(), Path::new("/usr/bin"), Path::new("/bin")]).unwrap();
        let tf = Terraform::with_path("terraform", dir.path(), path)
            .unwrap()
            .env("VAULT_ADDR", "http://127.0.0.1:8200")
            .secret_env("VAULT_TOKEN", SecretString::from("hvs.canary-token"));
        let mut init_env = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tf.init(&mut |_, l| init_env.push(l.to_owned())),
        )
        .await
        .expect("finished")
        .unwrap();
        assert!(
            init_env.iter().any(|l| l.starts_with("VAULT_ADDR=")),
            "{init_env:?}"
        );
        assert!(
            !init_env.iter().any(|l| l.starts_with("VAULT_TOKEN=")),
            "{init_env:?}"
        );
        // apply does get it (redacted in the output).
        let mut apply_env = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tf.apply(&Variables::new(), &mut |_, l| apply_env.push(l.to_owned())),
        )
        .await
        .expect("finished")
        .unwrap();
        assert!(
            apply_env.iter().any(|l| l == "VAULT_TOKEN=[redacted]"),
            "{apply_env:?}"
        );
    }
}
