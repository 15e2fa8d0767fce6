use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The process configuration an image or runtime carries, the part of an OCI image config that
/// Strata uses: what Dockerfile instructions ENV, WORKDIR, USER, CMD, ENTRYPOINT, LABEL and EXPOSE
/// set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Environment, in order, as `(KEY, VALUE)` pairs; a later ENV of the same key replaces it in
    /// place.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; empty means `/`.
    #[serde(default)]
    pub workdir: String,
    /// `user[:group]`, by name or number; empty means root.
    #[serde(default)]
    pub user: String,
    /// Default command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exposed ports, e.g. `8080/tcp`.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    /// Sets `key` to `value`, replacing an earlier value in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    /// The value of `key`, if set.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The environment as `KEY=VALUE` strings, with a default `PATH` when none is set.
    pub fn env_strings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if self.get_env("PATH").is_none() {
            out.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        out
    }
}

/// The `PATH` a process gets when its image sets none (the same as Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place_and_defaults_path() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(
            c.env,
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
        assert_eq!(c.env_strings()[0], format!("PATH={DEFAULT_PATH}"));
        c.set_env("PATH", "/x");
        assert_eq!(c.env_strings(), vec!["A=3", "B=2", "PATH=/x"]);
    }
}
