//! A failure's root-cause chain: the deepest object that is not healthy first, then each object
//! above it up to the one the step waited for, one line per level, and a hint where the cause
//! has a known fix.
//!
//! The chain travels inside the step's error text (so the checkpoint, the redactor and every
//! printer carry it unchanged) and is parsed back from it where a structured list is wanted
//! (`--output json`). The engine knows nothing of what the objects are.

use serde::Serialize;

/// The line that starts a chain inside an error message.
const HEADER: &str = "root cause (deepest first):";
/// Indent of a level line.
const LEVEL: &str = "  ";
/// Prefix of a level above the leaf.
const PARENT: &str = "  ← ";
/// Prefix of a detail line (an event) of the level above it.
const DETAIL: &str = "      ";
/// Prefix of the hint line.
const HINT: &str = "  hint: ";

/// One object on the path from the awaited object down to the cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    /// `Kind namespace/name`.
    pub object: String,
    /// What is wrong with it, or its state (`0/1 ready`, `Waiting: ImagePullBackOff (...)`).
    pub state: String,
    /// Recent events about it, newest last (`Warning Failed: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

impl Level {
    /// A level without events.
    #[must_use]
    pub fn new(object: impl Into<String>, state: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            state: state.into(),
            events: Vec::new(),
        }
    }
}

/// The chain, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Diagnosis {
    /// Levels, the deepest unhealthy object first, the awaited object last.
    pub levels: Vec<Level>,
    /// What usually fixes the leaf's cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnosis {
    /// The chain as lines to append to an error message (no trailing newline).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        for (i, level) in self.levels.iter().enumerate() {
            out.push('\n');
            out.push_str(if i == 0 { LEVEL } else { PARENT });
            out.push_str(&one_line(&level.object));
            out.push_str(": ");
            out.push_str(&one_line(&level.state));
            for e in &level.events {
                out.push('\n');
                out.push_str(DETAIL);
                out.push_str(&one_line(e));
            }
        }
        if let Some(h) = &self.hint {
            out.push('\n');
            out.push_str(HINT);
            out.push_str(&one_line(h));
        }
        out
    }

    /// The chain inside an error message, if it has one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines().skip_while(|l| *l != HEADER);
        lines.next()?;
        let mut out = Self::default();
        for line in lines {
            if let Some(h) = line.strip_prefix(HINT) {
                out.hint = Some(h.to_owned());
            } else if let Some(d) = line.strip_prefix(DETAIL) {
                if let Some(last) = out.levels.last_mut() {
                    last.events.push(d.to_owned());
                }
            } else if let Some(l) = line
                .strip_prefix(PARENT)
                .or_else(|| line.strip_prefix(LEVEL))
            {
                let (object, state) = l.split_once(": ").unwrap_or((l, ""));
                out.levels.push(Level::new(object, state));
            } else {
                break;
            }
        }
        (!out.levels.is_empty()).then_some(out)
    }

    /// The error message without its chain.
    #[must_use]
    pub fn strip(text: &str) -> &str {
        text.find(&format!("\n{HEADER}"))
            .map_or(text, |i| &text[..i])
    }
}

/// Messages (events, Helm errors) may hold newlines; a level stays one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_survives_the_error_text() {
        let d = Diagnosis {
            levels: vec![
                Level {
                    object: "Pod vault/vault-0".into(),
                    state: "Waiting: ImagePullBackOff (Back-off pulling image \"x:1\")".into(),
                    events: vec!["Warning Failed: Error: ImagePullBackOff".into()],
                },
                Level::new("StatefulSet vault/vault", "0/1 ready"),
                Level::new("HelmRelease vault/vault", "Ready=Unknown: multi\nline"),
            ],
            hint: Some("check the image".into()),
        };
        let text = format!("timed out waiting\n{}", d.render());
        let back = Diagnosis::parse(&text).expect("parsed");
        assert_eq!(back.levels[0], d.levels[0]);
        assert_eq!(back.levels[2].state, "Ready=Unknown: multi line");
        assert_eq!(back.hint.as_deref(), Some("check the image"));
        assert_eq!(Diagnosis::strip(&text), "timed out waiting");
        assert_eq!(Diagnosis::parse("plain error"), None);
    }
}
