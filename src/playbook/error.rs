//! Playbook errors: every problem at once, each pointing at a file, line and key.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted key path (`vault.key_threshold`, `secrets[1].env`); empty for file-level problems.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
    /// The nearest valid key or value, when the problem looks like a typo.
    pub suggestion: Option<String>,
}

/// Why a playbook could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The file could not be read.
    #[error("failed to read playbook {path}: {source}; pass the right file with -p PATH")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems (syntax, unknown keys, bad values).
    #[error("{0}")]
    Invalid(PlaybookProblems),
}

/// All problems found in one playbook, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookProblems {
    /// The playbook file.
    pub path: PathBuf,
    /// The problems, sorted by line.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PlaybookProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "playbook {} has {n} problem{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  {}", self.path.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.column {
                    write!(f, ":{col}")?;
                }
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": `{}`: {}", p.key, p.message)?;
            }
            if let Some(s) = &p.suggestion {
                write!(f, " (did you mean `{s}`?)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Maps byte offsets to 1-based line and column numbers.
#[derive(Debug)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// (line, column), both 1-based.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_maps_offsets() {
        let idx = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(4), (2, 2));
        assert_eq!(idx.position(7), (4, 1));
    }
}
