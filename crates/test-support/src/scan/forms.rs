//! The forms a secret takes when layers copy it: raw bytes, UTF-16LE (Windows-style wide
//! strings, some serialisers), hex, and base64 (Kubernetes Secret `data`, basic-auth headers).
//!
//! A canary encoded inside a larger base64 string can start at any byte offset, which shifts
//! the encoding by offset mod 3. For each of the three alignments only the characters that
//! depend on canary bits alone are stable, so those middle substrings are what is searched.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// One searchable form of a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// `NAME form`, e.g. `GITHUB_TOKEN base64+2`.
    pub label: String,
    /// The bytes to look for.
    pub bytes: Vec<u8>,
}

/// The stable middle of `value`'s base64 encoding when it starts `offset` bytes (0..3) into
/// an encoded buffer.
#[must_use]
pub fn base64_middle(value: &[u8], offset: usize, url_safe: bool) -> String {
    let mut buf = vec![0u8; offset];
    buf.extend_from_slice(value);
    let first = (offset * 8).div_ceil(6);
    let last = buf.len() * 8 / 6;
    let engine = if url_safe {
        &URL_SAFE_NO_PAD
    } else {
        &STANDARD_NO_PAD
    };
    engine.encode(&buf)[first..last].to_owned()
}

/// Every form of the canary `value` of variable `name`.
#[must_use]
pub fn forms_of(name: &str, value: &str) -> Vec<Form> {
    let mut out = vec![
        Form {
            label: format!("{name} raw"),
            bytes: value.as_bytes().to_vec(),
        },
        Form {
            label: format!("{name} utf16le"),
            bytes: value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        },
        Form {
            label: format!("{name} hex"),
            bytes: hex::encode(value).into_bytes(),
        },
    ];
    for offset in 0..3 {
        for url_safe in [false, true] {
            let bytes = base64_middle(value.as_bytes(), offset, url_safe).into_bytes();
            if out.iter().any(|f| f.bytes == bytes) {
                continue;
            }
            let kind = if url_safe { "base64url" } else { "base64" };
            out.push(Form {
                label: format!("{name} {kind}+{offset}"),
                bytes,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alignment_is_found_inside_a_larger_encoding() {
        let canary = "ghp_CANARYgithubTOKEN0123456789";
        let forms = forms_of("T", canary);
        for prefix in ["", "x", "xy", "user:", "a-much-longer-prefix:"] {
            for suffix in ["", "!", "\n--"] {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{prefix}{canary}{suffix}"));
                let hits = super::super::scan_bytes(encoded.as_bytes(), &forms, "t", 0);
                assert!(!hits.is_empty(), "{prefix:?} {suffix:?}: {encoded}");
            }
        }
    }

    #[test]
    fn utf16_and_raw_forms() {
        let forms = forms_of("T", "abcd1234");
        let wide: Vec<u8> = "xxabcd1234yy"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(super::super::scan_bytes(&wide, &forms, "t", 0).len(), 1);
        assert_eq!(
            super::super::scan_bytes(b"..abcd1234..", &forms, "t", 0).len(),
            1
        );
        assert!(super::super::scan_bytes(b"abcd123", &forms, "t", 0).is_empty());
    }
}
