//! What a kubelet decides for a container's process, where the sandbox's simulated processes
//! depend on it: which uid, gid and supplementary groups it runs with (securityContext, else
//! the image's default user), whether it may start at all (`runAsNonRoot`), and which files its
//! Secret and ConfigMap volumes present (root-owned; mode from `items[].mode` or `defaultMode`,
//! 0644 by default; with `fsGroup` group-owned by it and `mode |= 0440`), so a simulated process
//! reads exactly what the real one could (`pkg/volume/secret`, `SetVolumeOwnership`,
//! `kuberuntime/security_context.go`).

use serde_json::Value;

/// The API's default `defaultMode` for Secret, ConfigMap and projected volumes.
pub const DEFAULT_MODE: u32 = 0o644;

/// The default user of an image, as its Dockerfile's `USER` and `/etc/passwd` set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageUser {
    /// Numeric uid, `None` for a `USER` given by name (runAsNonRoot cannot verify it).
    pub uid: Option<u32>,
    /// The user name of a named `USER`.
    pub name: Option<&'static str>,
    /// Primary gid of that user.
    pub gid: u32,
}

/// The default users of the images the sandbox knows (their Dockerfiles); `None` for others.
///
/// - `hashicorp/vault`: no `USER` (root; the entrypoint drops to `vault` itself);
/// - `openbao/openbao`: `USER openbao` (uid 100, gid 1000), a name;
/// - ESO and Flux images: distroless `USER 65534(:65534)`.
pub fn image_user(image: &str) -> Option<ImageUser> {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .map_or(repo, |(r, tag)| if tag.contains('/') { repo } else { r });
    let repo = repo.trim_start_matches("docker.io/");
    match repo {
        "hashicorp/vault" | "library/vault" | "vault" => Some(ImageUser {
            uid: Some(0),
            name: None,
            gid: 0,
        }),
        "quay.io/openbao/openbao" | "openbao/openbao" => Some(ImageUser {
            uid: None,
            name: Some("openbao"),
            gid: 1000,
        }),
        r if r.starts_with("ghcr.io/fluxcd/")
            || r.ends_with("external-secrets/external-secrets") =>
        {
            Some(ImageUser {
                uid: Some(65534),
                name: None,
                gid: 65534,
            })
        }
        _ => None,
    }
}

/// The Vault-API CLIs on the `PATH` of a known image (their Dockerfiles); `None` for others.
///
/// - `hashicorp/vault`: `vault` only;
/// - `openbao/openbao` (Alpine) and `openbao/openbao-ubi`: `bao`, and `vault` as a symlink to
///   it (`ln -s /usr/bin/bao /usr/bin/vault`), so that CLI is `bao` under another name;
/// - `openbao/openbao-distroless`: `bao` but no shell, so no script runs at all.
pub fn image_clis(image: &str) -> Option<&'static [&'static str]> {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo
        .rsplit_once(':')
        .map_or(repo, |(r, tag)| if tag.contains('/') { repo } else { r });
    let repo = repo.trim_start_matches("docker.io/");
    let repo = repo
        .strip_prefix("quay.io/")
        .or_else(|| repo.strip_prefix("ghcr.io/"))
        .unwrap_or(repo);
    match repo {
        "hashicorp/vault" | "library/vault" | "vault" => Some(&["vault"]),
        "openbao/openbao" | "openbao/openbao-ubi" => Some(&["bao", "vault"]),
        "openbao/openbao-distroless" => Some(&[]),
        _ => None,
    }
}

/// The primary group `/etc/passwd` of a known image gives a uid set by `runAsUser`.
fn passwd_gid(image: &str, uid: u32) -> u32 {
    let vault_like = image.contains("vault") || image.contains("openbao");
    match uid {
        100 if vault_like => 1000,
        65534 => 65534,
        _ => 0,
    }
}

/// The identity a container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Effective uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups (fsGroup first, then supplementalGroups).
    pub groups: Vec<u32>,
    /// Whether root keeps CAP_DAC_OVERRIDE (not with `capabilities.drop: [ALL]`).
    pub dac_override: bool,
}

fn int(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// `name_namespace(uid)`, as kubelet messages print a pod.
pub fn format_pod(pod: &Value) -> String {
    let m = &pod["metadata"];
    format!(
        "{}_{}({})",
        m["name"].as_str().unwrap_or(""),
        m["namespace"].as_str().unwrap_or(""),
        m["uid"].as_str().unwrap_or("")
    )
}

/// The process a container of `pod` would run as, or the kubelet's refusal to start it
/// (`CreateContainerConfigError`) when `runAsNonRoot` cannot hold. Unknown images without a
/// `runAsUser` run as an unknown user: `None`.
///
/// # Errors
/// The kubelet's runAsNonRoot message.
pub fn process(pod: &Value, container: &Value) -> Result<Option<Process>, String> {
    let pod_sc = &pod["spec"]["securityContext"];
    let sc = &container["securityContext"];
    let image = container["image"].as_str().unwrap_or("");
    let name = container["name"].as_str().unwrap_or("");
    let user = image_user(image);
    let run_as = int(&sc["runAsUser"]).or_else(|| int(&pod_sc["runAsUser"]));
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or_else(|| pod_sc["runAsNonRoot"].as_bool())
        .unwrap_or(false);
    if non_root {
        match (run_as, user) {
            (Some(0), _) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy (pod: {:?}, container: {name})",
                    format_pod(pod)
                ));
            }
            (
                None,
                Some(ImageUser {
                    uid: None,
                    name: Some(n),
                    ..
                }),
            ) => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({n}), cannot verify user is non-root (pod: {:?}, container: {name})",
                    format_pod(pod)
                ));
            }
            (None, Some(ImageUser { uid: Some(0), .. })) => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root (pod: {:?}, container: {name})",
                    format_pod(pod)
                ));
            }
            _ => {}
        }
    }
    let uid = match (run_as, user) {
        (Some(u), _) => u,
        (None, Some(ImageUser { uid: Some(u), .. })) => u,
        (None, Some(ImageUser { name: Some(_), .. })) => 100,
        _ => return Ok(None),
    };
    let gid = int(&sc["runAsGroup"])
        .or_else(|| int(&pod_sc["runAsGroup"]))
        .unwrap_or_else(|| match (run_as, user) {
            (None, Some(u)) => u.gid,
            _ => passwd_gid(image, uid),
        });
    let mut groups = Vec::new();
    if let Some(fs) = int(&pod_sc["fsGroup"]) {
        groups.push(fs);
    }
    for g in pod_sc["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(g) = int(g) {
            groups.push(g);
        }
    }
    let dropped_all = sc["capabilities"]["drop"]
        .as_array()
        .is_some_and(|d| d.iter().any(|c| c == "ALL" || c == "DAC_OVERRIDE"));
    Ok(Some(Process {
        uid,
        gid,
        groups,
        dac_override: uid == 0 && !dropped_all,
    }))
}

/// One file of a Secret or ConfigMap volume as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Absolute path in the container (`<mountPath>/<path>`).
    pub path: String,
    /// The Secret/ConfigMap key it holds.
    pub key: String,
    /// Owner uid (always root: the kubelet writes it).
    pub uid: u32,
    /// Owner gid (`fsGroup`, else root).
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl VolumeFile {
    /// `-r--r-----`.
    pub fn mode_string(&self) -> String {
        let bits = ['r', 'w', 'x'];
        let mut s = String::from("-");
        for shift in [6, 3, 0] {
            for (i, c) in bits.iter().enumerate() {
                let bit = 1 << (shift + 2 - i as u32);
                s.push(if self.mode & bit != 0 { *c } else { '-' });
            }
        }
        s
    }
}

/// The files the volume `volume_name` presents in `container` of `pod`, given the `source`
/// object (the Secret or ConfigMap; `None` while it does not exist: an optional volume is then
/// empty). Keys of `source` are `data` (and `binaryData`) entries.
pub fn volume_files(
    pod: &Value,
    container: &Value,
    volume_name: &str,
    source: Option<&Value>,
) -> Vec<VolumeFile> {
    let Some(mount) = container["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == volume_name))
    else {
        return Vec::new();
    };
    let Some(vol) = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == volume_name))
    else {
        return Vec::new();
    };
    let src = if vol["secret"].is_object() {
        &vol["secret"]
    } else {
        &vol["configMap"]
    };
    let Some(source) = source else {
        return Vec::new();
    };
    let keys: Vec<String> = ["data", "binaryData"]
        .iter()
        .filter_map(|k| source[*k].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    let default_mode = int(&src["defaultMode"]).unwrap_or(DEFAULT_MODE);
    let fs_group = int(&pod["spec"]["securityContext"]["fsGroup"]);
    let root = mount["mountPath"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/');
    let sub = mount["subPath"].as_str();
    let entries: Vec<(String, String, u32)> =
        match src["items"].as_array().filter(|a| !a.is_empty()) {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let key = i["key"].as_str()?;
                    keys.iter().any(|k| k == key).then(|| {
                        (
                            key.to_string(),
                            i["path"].as_str().unwrap_or(key).to_string(),
                            int(&i["mode"]).unwrap_or(default_mode),
                        )
                    })
                })
                .collect(),
            None => keys
                .iter()
                .map(|k| (k.clone(), k.clone(), default_mode))
                .collect(),
        };
    entries
        .into_iter()
        .filter(|(_, path, _)| sub.is_none_or(|s| s == path))
        .map(|(key, path, mode)| {
            let (gid, mode) = match fs_group {
                // SetVolumeOwnership for a read-only volume: chgrp fsGroup, mode |= 0440.
                Some(g) => (g, mode | 0o440),
                None => (0, mode),
            };
            VolumeFile {
                path: if sub.is_some() {
                    root.to_string()
                } else {
                    format!("{root}/{path}")
                },
                key,
                uid: 0,
                gid,
                mode: mode & 0o7777,
            }
        })
        .collect()
}

/// Whether `p` may read `f` (owner bits for its owner, group bits for a member of its group,
/// other bits otherwise; root with CAP_DAC_OVERRIDE reads anything).
pub fn can_read(p: &Process, f: &VolumeFile) -> bool {
    if p.dac_override {
        return true;
    }
    let bit = if p.uid == f.uid {
        0o400
    } else if p.gid == f.gid || p.groups.contains(&f.gid) {
        0o040
    } else {
        0o004
    };
    f.mode & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(sc: Value, default_mode: Option<u32>) -> Value {
        let mut secret = json!({"secretName": "keys", "items": [{"key": "unseal-key-0", "path": "unseal-key-0"}]});
        if let Some(m) = default_mode {
            secret["defaultMode"] = json!(m);
        }
        json!({
            "metadata": {"name": "u", "namespace": "vault", "uid": "1"},
            "spec": {
                "securityContext": sc,
                "containers": [{"name": "unsealer", "image": "hashicorp/vault:1.19.0",
                    "securityContext": {"capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "keys", "mountPath": "/vault-keys"}]}],
                "volumes": [{"name": "keys", "secret": secret}],
            },
        })
    }

    fn secret() -> Value {
        json!({"data": {"unseal-key-0": "eA==", "root-token": "eA=="}})
    }

    #[test]
    fn owner_only_keys_are_unreadable_without_fs_group() {
        let p = pod(
            json!({"runAsNonRoot": true, "runAsUser": 100, "runAsGroup": 1000}),
            Some(0o400),
        );
        let c = &p["spec"]["containers"][0];
        let proc_ = process(&p, c).expect("starts").expect("known");
        assert_eq!((proc_.uid, proc_.gid), (100, 1000));
        let files = volume_files(&p, c, "keys", Some(&secret()));
        assert_eq!(files.len(), 1, "only the listed items are mounted");
        assert_eq!(files[0].path, "/vault-keys/unseal-key-0");
        assert_eq!((files[0].uid, files[0].gid, files[0].mode), (0, 0, 0o400));
        assert!(!can_read(&proc_, &files[0]));
    }

    #[test]
    fn fs_group_makes_keys_group_readable() {
        let p = pod(
            json!({"runAsNonRoot": true, "runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000}),
            Some(0o400),
        );
        let c = &p["spec"]["containers"][0];
        let proc_ = process(&p, c).expect("starts").expect("known");
        let files = volume_files(&p, c, "keys", Some(&secret()));
        assert_eq!((files[0].gid, files[0].mode), (1000, 0o440));
        assert_eq!(files[0].mode_string(), "-r--r-----");
        assert!(can_read(&proc_, &files[0]));
        // 0644 (the default) is world-readable anyway.
        let p = pod(json!({"runAsUser": 100}), None);
        let files = volume_files(&p, &p["spec"]["containers"][0], "keys", Some(&secret()));
        assert_eq!(files[0].mode, 0o644);
    }

    #[test]
    fn run_as_non_root_needs_a_non_root_user() {
        let p = pod(json!({"runAsNonRoot": true}), None);
        let e = process(&p, &p["spec"]["containers"][0]).expect_err("root image");
        assert_eq!(
            e,
            r#"container has runAsNonRoot and image will run as root (pod: "u_vault(1)", container: unsealer)"#
        );
        let mut bao = p.clone();
        bao["spec"]["containers"][0]["image"] = json!("quay.io/openbao/openbao:2.6.2");
        assert!(
            process(&bao, &bao["spec"]["containers"][0])
                .expect_err("named")
                .contains("non-numeric user (openbao)")
        );
        let mut unknown = p.clone();
        unknown["spec"]["containers"][0]["image"] = json!("example/thing:1");
        assert_eq!(
            process(&unknown, &unknown["spec"]["containers"][0]),
            Ok(None)
        );
    }
}
