//! `--help` examples, the three most common invocations of each subcommand (as `kubectl` and
//! `flux` show them), kept apart from the flags so they read as one list per command.

/// `kubestrap plan`.
pub(crate) const PLAN: &str = "\
Examples:
  # What apply would do on the quickstart's sandbox (changes nothing, needs no secrets)
  kubestrap plan -p playbooks/sandbox.toml

  # The same as one JSON document, for scripts
  kubestrap plan -p kubestrap.toml -o json

  # Draw the step DAG
  kubestrap plan -p kubestrap.toml -o dot | dot -Tsvg > dag.svg";

/// `kubestrap apply`.
pub(crate) const APPLY: &str = "\
Examples:
  # Bootstrap the cluster the playbook describes (secrets come from the environment)
  GITHUB_TOKEN=... kubestrap apply -p kubestrap.toml

  # Continue after a failure or Ctrl-C: verify what is done, run the rest
  kubestrap apply -p kubestrap.toml --resume

  # One step only, with JSON lines for a CI log
  kubestrap apply -p kubestrap.toml --resume --only vault.configure -o json";

/// `kubestrap status`.
pub(crate) const STATUS: &str = "\
Examples:
  # Done / failed / pending per step, from the checkpoint
  kubestrap status -p kubestrap.toml

  # The same as JSON (names the kubeconfig too)
  kubestrap status -p kubestrap.toml -o json

  # The steps that are not done yet
  kubestrap status -p kubestrap.toml -o json | jq -r '.steps[] | select(.status != \"done\") | .id'";

/// `kubestrap unseal`.
pub(crate) const UNSEAL: &str = "\
Examples:
  # Unseal once (prints: already unsealed / unsealed with 3 of 5 shares)
  kubestrap unseal -p kubestrap.toml

  # Keep Vault unsealed across restarts while the auto-unsealer is down; Ctrl-C stops
  kubestrap unseal -p kubestrap.toml --watch

  # Another kubeconfig or context than the playbook names
  kubestrap unseal -p kubestrap.toml --kubeconfig ~/.kube/prod --context prod";

/// `kubestrap sandbox`.
#[cfg(feature = "sandbox")]
pub(crate) const SANDBOX: &str = "\
Examples:
  # Start a sandbox cluster in the background of this shell (apply starts one by itself)
  kubestrap sandbox up --dir /tmp/sandbox &

  # With simulated API errors, for trying retries
  kubestrap sandbox up --dir /tmp/sandbox --faults seed=7,api_error_rate=0.1,api_error=503

  # Stop the quickstart's sandbox
  kubestrap sandbox down --dir playbooks/.kubestrap/sandbox/sandbox";

/// `kubestrap init`.
pub(crate) const INIT: &str = "\
Examples:
  # A sandbox playbook that plan and apply accept as written
  kubestrap init --provider sandbox

  # An existing cluster: the Git repository and context given, nothing left to fill in
  kubestrap init --provider existing --git-url https://github.com/ORG/fleet --context prod -p prod.toml

  # k3s over SSH, replacing an earlier starter
  kubestrap init --provider k3s-ssh --ssh-host node1.example.org --force";

/// `kubestrap completions`.
pub(crate) const COMPLETIONS: &str = "\
Examples:
  # bash (needs the bash-completion package)
  kubestrap completions bash > ~/.local/share/bash-completion/completions/kubestrap

  # zsh (a directory on $fpath, before compinit runs)
  kubestrap completions zsh > ~/.zfunc/_kubestrap

  # fish; PowerShell: kubestrap completions powershell | Out-String | Invoke-Expression
  kubestrap completions fish > ~/.config/fish/completions/kubestrap.fish";
