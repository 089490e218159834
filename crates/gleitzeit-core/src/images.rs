//! Vision images: base64 checking and normalisation, and encoding of image files.
//!
//! Images travel inside the task spec as raw standard base64 (what Ollama's API takes; other
//! providers wrap it in a data URL themselves). Files may give `data:<mime>;base64,` URLs or
//! base64 broken over lines; both are normalised here.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

/// Accepts standard base64 with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// True when the string contains a template and can only be checked after rendering.
pub(crate) fn is_templated(s: &str) -> bool {
    s.contains("{{")
}

/// Checks an image string and returns it as canonical padded base64 without whitespace.
pub(crate) fn normalize_base64(s: &str) -> Result<String, String> {
    let payload = match s.strip_prefix("data:") {
        Some(rest) => match rest.find(";base64,") {
            Some(i) => &rest[i + ";base64,".len()..],
            None => return Err("data URL is not base64-encoded (expected `;base64,`)".to_owned()),
        },
        None => s,
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err("image is empty".to_owned());
    }
    let bytes = LENIENT
        .decode(compact.as_bytes())
        .map_err(|e| format!("not valid base64 ({e})"))?;
    Ok(STANDARD.encode(bytes))
}

/// Encodes file bytes as standard base64.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Length of the base64 encoding of `n` bytes (padded).
pub(crate) fn encoded_len(n: u64) -> u64 {
    n.div_ceil(3).saturating_mul(4)
}

/// A short, printable form of a possibly huge string for messages.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_padding_whitespace_and_data_urls() {
        assert_eq!(normalize_base64("aGVsbG8=").unwrap(), "aGVsbG8=");
        assert_eq!(normalize_base64("aGVsbG8").unwrap(), "aGVsbG8=");
        assert_eq!(normalize_base64("aGVs\n bG8=\n").unwrap(), "aGVsbG8=");
        assert_eq!(
            normalize_base64("data:image/png;base64,aGVsbG8=").unwrap(),
            "aGVsbG8="
        );
    }

    #[test]
    fn rejects_invalid() {
        assert!(normalize_base64("").is_err());
        assert!(normalize_base64("  \n").is_err());
        assert!(normalize_base64("not base64!").is_err());
        assert!(normalize_base64("photo.png").is_err());
        assert!(normalize_base64("data:image/png,raw").is_err());
        assert!(normalize_base64("a").is_err());
    }

    #[test]
    fn encoded_lengths() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 4);
        assert_eq!(encoded_len(3), 4);
        assert_eq!(encoded_len(4), 8);
        assert_eq!(encode(b"hello").len() as u64, encoded_len(5));
        assert_eq!(encoded_len(u64::MAX), u64::MAX);
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("a.png"), "\"a.png\"");
        assert!(excerpt(&"x".repeat(10_000)).len() < 80);
    }
}
