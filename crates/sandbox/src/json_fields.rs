//! Reading loosely typed JSON fields the way the API server does: a missing or mistyped field
//! counts as empty, never as an error (validation, where it exists, reports those separately).

use serde_json::Value;

/// The strings of a JSON array (`rules[].verbs`, `spec.audiences`, a CRD's `shortNames`);
/// non-strings are skipped, anything but an array is empty.
pub(crate) fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
