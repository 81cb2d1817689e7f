//! Loading a playbook text that must be refused, and finding one of its problems: shared by the
//! playbook test files (`#[path]`-included, so it is no test target of its own).

use std::path::Path;

use kubestrap::playbook::{Playbook, PlaybookError, Problem};

/// The problems of `text`, loaded as if from `path`; panics when it loads.
pub fn problems_at(text: &str, path: &str) -> Vec<Problem> {
    match Playbook::from_str_at(text, Path::new(path)) {
        Err(PlaybookError::Invalid(p)) => p.problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The problem about `key`; panics when there is none.
pub fn find<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for `{key}` in {problems:#?}"))
}
