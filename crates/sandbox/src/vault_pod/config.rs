//! The real server's configuration as the sandbox writes it: a production-style single node
//! (raft storage under the sandbox directory, Shamir seal, a plain-HTTP listener on loopback),
//! the files it lives in, and which server the binary is (`bao` or `vault`).

use std::path::{Path, PathBuf};

use super::ServerError;

/// Which Vault-API server a binary is, from its `version` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OpenBao (`bao`): `OpenBao v2.7.2 (…)`.
    OpenBao,
    /// HashiCorp Vault (`vault`): `Vault v1.19.0 (…)`.
    Vault,
}

impl Flavor {
    /// Reads the flavor and version from the first line of `<binary> version`.
    pub fn detect(version_output: &str) -> Option<(Self, String)> {
        let line = version_output.lines().next()?.trim();
        let (flavor, rest) = if let Some(rest) = line.strip_prefix("OpenBao ") {
            (Self::OpenBao, rest)
        } else if let Some(rest) = line.strip_prefix("Vault ") {
            (Self::Vault, rest)
        } else {
            return None;
        };
        let version = rest.split_whitespace().next()?.trim_start_matches('v');
        Some((flavor, version.to_string()))
    }

    /// The product name, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenBao => "OpenBao",
            Self::Vault => "Vault",
        }
    }
}

/// Where the server's files live: `DIR/vault-server/`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `DIR/vault-server`.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under the sandbox directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            root: dir.join("vault-server"),
        }
    }

    /// `config.hcl`, rewritten at every sandbox start.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.hcl")
    }

    /// The raft data directory: the pod's volume, kept across restarts.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's own `$HOME` (it writes nothing there; the CLI token helper would).
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// The server's stdout and stderr, appended across restarts.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The static seal's key file: what the pod's mounted Secret holds, as its container
    /// would see it (0600, rewritten at each pod start, removed when the pod has none).
    pub fn static_seal_key(&self) -> PathBuf {
        self.root.join("static-seal.key")
    }

    /// The running server's pid (for operators and tests).
    pub fn pid(&self) -> PathBuf {
        self.root.join("server.pid")
    }

    /// The ports of the last start, reused when free (raft remembers its cluster address).
    pub fn ports(&self) -> PathBuf {
        self.root.join("ports.json")
    }

    /// Creates the directories (0700: the raft files hold the encrypted barrier and keyring).
    ///
    /// # Errors
    /// A directory cannot be created.
    pub fn create(&self) -> Result<(), ServerError> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [self.root.clone(), self.data(), self.home()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|source| ServerError::Io { path: d, source })?;
        }
        Ok(())
    }
}

/// The two loopback ports of the server: API and cluster (raft) traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    /// The API listener (`http://127.0.0.1:<api>`).
    pub api: u16,
    /// The cluster listener raft and request forwarding use.
    pub cluster: u16,
}

fn free(port: u16) -> bool {
    port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn pick() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

impl Ports {
    /// The ports of the last start when both are still free, else two fresh free ones; saved
    /// for the next start. (Another process could take a fresh port before the server binds
    /// it; the server then fails to start and says so in its log, like a pod in a port clash.)
    ///
    /// # Errors
    /// No free port, or the file cannot be written.
    pub fn load_or_pick(layout: &Layout) -> Result<Self, ServerError> {
        let path = layout.ports();
        let previous: Option<Self> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let ports = match previous {
            Some(p) if p.api != p.cluster && free(p.api) && free(p.cluster) => p,
            _ => {
                let io = |source| ServerError::Io {
                    path: path.clone(),
                    source,
                };
                let api = pick().map_err(io)?;
                let mut cluster = pick().map_err(io)?;
                while cluster == api {
                    cluster = pick().map_err(io)?;
                }
                Self { api, cluster }
            }
        };
        std::fs::write(&path, serde_json::to_vec(&ports).unwrap_or_default())
            .map_err(|source| ServerError::Io { path, source })?;
        Ok(ports)
    }
}

/// A string literal in HCL (paths may hold quotes or backslashes).
fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            // `${` and `%{` start template sequences; a doubled sigil is the literal.
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The server configuration: what a production single node runs with, on loopback.
///
/// - Raft with `performance_multiplier = 1`: raft's timers at their tightest, so the first
///   `sys/init` (which waits for the raft election) takes about 2 s instead of 7–9 s.
/// - `tls_disable`: the pod is reached through port-forward, as the charts' default
///   listener does (`tls_disable = 1`).
/// - No `disable_mlock` for OpenBao: it removed mlock in 2.0 and warns about the key; Vault
///   still wants it off when the process may not lock memory.
///
/// With `static_seal` (the pod's `current_key_id`), a `seal "static"` stanza reads the key
/// from [`Layout::static_seal_key`], the file the pod's Secret volume presents.
pub fn render(flavor: Flavor, layout: &Layout, ports: Ports, static_seal: Option<&str>) -> String {
    let data = hcl_string(&layout.data().display().to_string());
    let mlock = match flavor {
        Flavor::Vault => "disable_mlock = true\n",
        Flavor::OpenBao => "",
    };
    let seal = static_seal.map_or(String::new(), |key_id| {
        format!(
            "\nseal \"static\" {{\n  current_key_id = {}\n  current_key    = {}\n}}\n",
            hcl_string(key_id),
            hcl_string(&format!("file://{}", layout.static_seal_key().display()))
        )
    });
    format!(
        "# Written by the kubestrap sandbox at every start: the Vault pod's server.\n\
         storage \"raft\" {{\n  path                   = {data}\n  node_id                = \"vault-0\"\n  performance_multiplier = 1\n}}\n\n\
         listener \"tcp\" {{\n  address         = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable     = true\n}}\n\n\
         api_addr     = \"http://127.0.0.1:{api}\"\n\
         cluster_addr = \"https://127.0.0.1:{cluster}\"\n\
         ui           = false\n{mlock}{seal}",
        api = ports.api,
        cluster = ports.cluster,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavors_are_read_from_the_version_line() {
        assert_eq!(
            Flavor::detect(
                "OpenBao v2.7.2 (9e0a0d3c3504a0a00b45e61355afac5e35c78379), committed 2026-10-26T20:32:27Z\n"
            ),
            Some((Flavor::OpenBao, "2.7.2".into()))
        );
        assert_eq!(
            Flavor::detect(
                "Vault v1.19.0 (7eeafb6160d60ede73c1d95566b0c8ea54f3cb5a), built 2025-03-04T12:36:40Z"
            ),
            Some((Flavor::Vault, "1.19.0".into()))
        );
        assert_eq!(Flavor::detect("kubectl v1.33"), None);
        assert_eq!(Flavor::detect(""), None);
    }

    #[test]
    fn config_is_raft_on_loopback_with_escaped_paths() {
        let layout = Layout::new(Path::new("/tmp/a \"b\"/${x}/$y"));
        let ports = Ports {
            api: 41000,
            cluster: 41001,
        };
        let hcl = render(Flavor::OpenBao, &layout, ports, None);
        assert!(
            hcl.contains(r#"path                   = "/tmp/a \"b\"/$${x}/$y/vault-server/data""#),
            "{hcl}"
        );
        assert!(hcl.contains("address         = \"127.0.0.1:41000\""));
        assert!(hcl.contains("cluster_address = \"127.0.0.1:41001\""));
        assert!(hcl.contains("performance_multiplier = 1"));
        assert!(!hcl.contains("disable_mlock"), "OpenBao warns about it");
        let parsed = hcl::parse(&hcl).expect("valid HCL");
        assert_eq!(parsed.attributes().count(), 3);
        let value: serde_json::Value = hcl::from_str(&hcl).expect("evaluates");
        assert_eq!(
            value["storage"]["raft"]["path"], "/tmp/a \"b\"/${x}/$y/vault-server/data",
            "the path survives HCL's escapes"
        );
        assert!(render(Flavor::Vault, &layout, ports, None).contains("disable_mlock = true"));
        let sealed = render(Flavor::OpenBao, &layout, ports, Some("k1"));
        let value: serde_json::Value = hcl::from_str(&sealed).expect("evaluates");
        assert_eq!(value["seal"]["static"]["current_key_id"], "k1");
        assert_eq!(
            value["seal"]["static"]["current_key"],
            "file:///tmp/a \"b\"/${x}/$y/vault-server/static-seal.key"
        );
    }

    #[test]
    fn ports_are_reused_while_free() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(tmp.path());
        layout.create().expect("dirs");
        let first = Ports::load_or_pick(&layout).expect("pick");
        assert_ne!(first.api, first.cluster);
        assert_eq!(Ports::load_or_pick(&layout).expect("again"), first);
        let _busy = std::net::TcpListener::bind(("127.0.0.1", first.api)).expect("hold");
        let moved = Ports::load_or_pick(&layout).expect("moved");
        assert_ne!(moved.api, first.api);
    }
}
